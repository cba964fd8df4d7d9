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
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from huddle.secrets import redact
from huddle.storage.sessions import EndStatus, SessionStore, Turn
from huddle.storage.sqlite import StorageError
from huddle.teams.base import RunResult, Team
from huddle.teams.managed_chat import Event

CANCELLED = "cancelled by the user"
_ERROR_CHARS = 500


class DurableTeam:
    """Runs turns of one session on `team`, recording each in `store`."""

    def __init__(self, team: Team, store: SessionStore, session_id: str) -> None:
        self.team = team
        self.store = store
        self.session_id = session_id
        self._baseline: dict[str, Any] | None = None  # the team's state after the last finished turn

    async def open(self) -> Turn | None:
        """Lease the session to this process (until the store is closed), restore the team to the end of its last
        finished turn, and return a turn left unfinished, if any: with the lease, an unfinished turn is one whose
        process died, never one that another process is still running."""
        self.store.lease(self.session_id)
        state = self.store.saved_state(self.session_id)
        if state is not None:
            await self.team.load_state(state)
            self._baseline = state
        return self.store.unfinished(self.session_id)

    async def run_stream(
        self, task: str, *, redo: Turn | None = None, run_id: str | None = None
    ) -> AsyncIterator[Event | RunResult]:
        """One turn: acknowledged first (or the unfinished `redo` turn taken up again), recorded when it ends.
        `run_id` names the run when the caller must know it before the first event (a server's response id)."""
        self.store.lease(self.session_id)  # already held after `open`
        if self._baseline is None:
            self._baseline = _jsonable(await self.team.save_state())
        run_id = run_id or uuid.uuid4().hex[:12]
        if redo is not None:
            turn = redo.turn
            self.store.restart_turn(self.session_id, turn, run_id)
        else:
            turn = self.store.begin_turn(self.session_id, self.team.spec.team.name, task, run_id)
        ended = False
        stream = self.team.run_stream(task, run_id=run_id)
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
        """Redo the turn a crash interrupted, once."""
        async for item in self.run_stream(redo.task, redo=redo, run_id=run_id):
            yield item

    async def _finish(self, turn: int, result: RunResult) -> None:
        """Record a turn that produced its result: ``done`` with the team's state, or ``failed`` without one."""
        decisions = [d.model_dump() for d in result.decisions]
        messages = [m.model_dump() for m in result.messages]
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
