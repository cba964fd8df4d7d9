"""A team whose turns are saved as they happen, so a session can be resumed in another process.

`DurableTeam` wraps a team of any kind with a `SessionStore`: `open` restores the state after the last finished turn
and reports a turn left unfinished by a crash; `run_stream` acknowledges the user's message before the team starts
and saves the team's state, plan, decisions and messages when it ends; `resume` redoes the unfinished turn once.

A turn that ends without an answer (its run raised, or its result says ``error: ...``) is recorded ``failed``, one
the user interrupts (its task cancelled, or its stream closed early) ``cancelled``; either way the team is put back
to where the last finished turn left it, so what it carries in memory is what a resumed session would load, and the
next message is answered as if the failed one had not been sent.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from huddle.agents.approval import AWAITING, ApprovalDecision
from huddle.errors import HuddleError
from huddle.secrets import redact
from huddle.storage.sessions import EndStatus, SessionStore, Turn
from huddle.storage.sqlite import StorageError
from huddle.teams.base import RunResult, Team
from huddle.teams.managed_chat import Event

CANCELLED = "cancelled by the user"
OVERTAKEN = "not approved: a new message was sent first"
"""Why a turn paused for approvals ended: the next message was not an answer to it."""
_ERROR_CHARS = 500


class DurableTeam:
    """Runs turns of one session on `team`, recording each in `store`."""

    def __init__(self, team: Team, store: SessionStore, session_id: str) -> None:
        self.team = team
        self.store = store
        self.session_id = session_id
        self._baseline: dict[str, Any] | None = None  # the team's state after the last finished turn
        self.awaiting: Turn | None = None  # the turn paused for approvals, if any
        self._earlier: Turn | None = None  # while a paused turn runs again: what it had recorded

    async def open(self) -> Turn | None:
        """Lease the session to this process (until the store is closed), restore the team to the end of its last
        finished turn, and return a turn left unfinished, if any: with the lease, an unfinished turn is one whose
        process died, never one that another process is still running."""
        self.store.lease(self.session_id)
        state = self.store.saved_state(self.session_id)
        if state is not None:
            await self.team.load_state(state)
            self._baseline = state
        self.store.reopen_interrupted(self.session_id)  # a crash while approved calls ran: paused again
        paused = self.store.awaiting(self.session_id)
        if paused is not None:  # the team goes on from where it paused, not from the last finished turn
            self.awaiting, paused_state, run_state = paused
            await self.team.load_state(paused_state)
            self.team.state.restore(run_state)
            if not self.team.state.waiting:  # every call decided before the crash: `resume` takes it up again
                return self.awaiting
        return self.store.unfinished(self.session_id)

    async def run_stream(
        self, task: str, *, redo: Turn | None = None, run_id: str | None = None
    ) -> AsyncIterator[Event | RunResult]:
        """One turn: acknowledged first (or the unfinished `redo` turn taken up again), recorded when it ends.
        `run_id` names the run when the caller must know it before the first event (a server's response id)."""
        self.store.lease(self.session_id)  # already held after `open`
        decisions = self.team.customer_decisions(task) if self.awaiting is not None else None
        if decisions is not None:  # the customer's own "yes" / "no" to the waiting calls
            async for item in self.approve(decisions, run_id=run_id):
                yield item
            return
        if self.awaiting is not None:  # a new message instead of decisions: the paused calls never run
            self.store.drop_awaiting(self.session_id, OVERTAKEN)
            self.awaiting = None
            await self._restore()
        if self._baseline is None:
            self._baseline = _jsonable(await self.team.save_state())
        run_id = run_id or uuid.uuid4().hex[:12]
        if redo is not None:
            turn = redo.turn
            self.store.restart_turn(self.session_id, turn, run_id)
        else:
            turn = self.store.begin_turn(self.session_id, self.team.spec.team.name, task, run_id)
        async for item in self._record(turn, self.team.run_stream(task, run_id=run_id)):
            yield item

    async def approve(
        self, decisions: dict[str, ApprovalDecision], *, run_id: str | None = None
    ) -> AsyncIterator[Event | RunResult]:
        """Take up the turn that paused for approvals with `decisions` (see `Team.resume_stream`), in this process
        or another; refused with one `HuddleError` line before anything runs when they do not fit."""
        self.store.lease(self.session_id)
        paused = self.awaiting
        if paused is None:
            raise HuddleError(f"session {self.session_id!r} has no tool call waiting for approval")
        self.team.check_decisions(decisions)
        run_id = run_id or self.team.state.run_id or uuid.uuid4().hex[:12]
        self.store.take_up(self.session_id, paused.turn, run_id)
        self.awaiting, self._earlier = None, paused

        async def save() -> None:
            state = _jsonable(await self.team.save_state())
            self.store.checkpoint(self.session_id, paused.turn, state=state, run_state=self.team.state.snapshot())

        stream = self.team.resume_stream(decisions, run_id=run_id, checkpoint=save)
        async for item in self._record(paused.turn, stream):
            yield item

    async def _record(
        self, turn: int, stream: AsyncGenerator[Event | RunResult, None]
    ) -> AsyncIterator[Event | RunResult]:
        """Pass the turn's stream on and record how it ends."""
        ended = False
        try:
            # aclosing: when our caller closes us early, the team's run ends now (and before we restore its state).
            async with aclosing(stream):
                async for item in stream:
                    if isinstance(item, RunResult):
                        await self._finish(turn, item)
                        ended = True
                    yield item
        except (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt):
            if not ended:
                await self._abandon(turn, "cancelled", CANCELLED)
            raise
        except Exception as error:
            if not ended:
                await self._abandon(turn, "failed", redact(f"{type(error).__name__}: {error}")[:_ERROR_CHARS])
            raise

    async def resume(self, redo: Turn, *, run_id: str | None = None) -> AsyncIterator[Event | RunResult]:
        """Redo the turn a crash interrupted, once; a paused turn whose calls were all decided before the crash is
        taken up again with those decisions instead (an approved call that ran, or was running, is not run again)."""
        if self.awaiting is not None and self.awaiting.turn == redo.turn:
            items = self.approve({}, run_id=run_id)
        else:
            items = self.run_stream(redo.task, redo=redo, run_id=run_id)
        async for item in items:
            yield item

    async def _finish(self, turn: int, result: RunResult) -> None:
        """Record a turn that produced its result: ``done`` with the team's state, or ``failed`` without one."""
        earlier, self._earlier = self._earlier, None  # the part of this turn before it paused
        decisions = [*(earlier.decisions if earlier else []), *(d.model_dump() for d in result.decisions)]
        messages = [*(earlier.messages if earlier else []), *(m.model_dump() for m in result.messages)]
        if result.stop_reason == AWAITING and result.pending:
            self.store.finish_turn(
                self.session_id,
                turn,
                status="awaiting_approval",
                state=_jsonable(await self.team.save_state()),
                run_state=self.team.state.snapshot(),
                decisions=decisions,
                messages=messages,
            )
            self.awaiting = next(t for t in self.store.turns(self.session_id) if t.turn == turn)
            return
        if not result.answer:
            self.store.finish_turn(
                self.session_id, turn, status="failed", error=result.stop_reason, decisions=decisions, messages=messages
            )
            await self._restore()
            return
        plan = self.team.state.plan
        state = _jsonable(await self.team.save_state())
        self.store.finish_turn(
            self.session_id,
            turn,
            answer=result.answer,
            state=state,
            plan=plan.model_dump() if plan else None,
            decisions=decisions,
            messages=messages,
        )
        self._baseline = state  # only once saved: a turn the store refused is undone like a failed one

    async def _abandon(self, turn: int, status: EndStatus, error: str) -> None:
        """Record a turn that ended with no result, and put the team back where its last finished turn left it.

        When the store cannot take the record either (the disk that refused the turn's end is still full), the turn
        stays ``running`` for a resume to redo once, and the error that ended the turn is the one the user sees."""
        self._earlier = None
        try:
            self.store.finish_turn(self.session_id, turn, status=status, error=error)
        except StorageError:
            pass
        finally:
            await self._restore()

    async def _restore(self) -> None:
        if self._baseline is not None:
            await self.team.load_state(self._baseline)


def _jsonable(state: Any) -> dict[str, Any]:
    """autogen's saved state holds datetimes; store them as ISO strings (its models parse them back)."""
    return json.loads(json.dumps(state, default=str))  # type: ignore[no-any-return]
