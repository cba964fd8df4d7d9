"""A team whose turns are saved as they happen, so a session can be resumed in another process.

`DurableTeam` wraps a team of any kind with a `SessionStore`: `open` restores the state after the last finished turn
and reports a turn left unfinished by a crash; `run_stream` acknowledges the user's message before the team starts
and saves the team's state, plan, decisions and messages when it ends; `resume` redoes the unfinished turn once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from huddle.sessions import SessionStore, Turn
from huddle.teams.group_chat import Event, RunResult
from huddle.teams.patterns import AnyTeam


class DurableTeam:
    """Runs turns of one session on `team`, recording each in `store`."""

    def __init__(self, team: AnyTeam, store: SessionStore, session_id: str) -> None:
        self.team = team
        self.store = store
        self.session_id = session_id

    async def open(self) -> Turn | None:
        """Restore the team to the end of the session's last finished turn; return a turn left unfinished, if any."""
        state = self.store.saved_state(self.session_id)
        if state is not None:
            await self.team.load_state(state)
        return self.store.unfinished(self.session_id)

    async def run_stream(self, task: str, *, redo: Turn | None = None) -> AsyncIterator[Event | RunResult]:
        """One turn: acknowledged first (or the unfinished `redo` turn taken up again), saved when done."""
        run_id = uuid.uuid4().hex[:12]
        if redo is not None:
            turn = redo.turn
            self.store.restart_turn(self.session_id, turn, run_id)
        else:
            turn = self.store.begin_turn(self.session_id, self.team.spec.team.name, task, run_id)
        async for item in self.team.run_stream(task, run_id=run_id):
            if isinstance(item, RunResult):
                plan = self.team.state.plan
                self.store.finish_turn(
                    self.session_id,
                    turn,
                    answer=item.answer,
                    state=_jsonable(await self.team.save_state()),
                    plan=plan.model_dump() if plan else None,
                    decisions=[d.model_dump() for d in item.decisions],
                    messages=[m.model_dump() for m in item.messages],
                )
            yield item

    async def resume(self, redo: Turn) -> AsyncIterator[Event | RunResult]:
        """Redo the turn a crash interrupted, once."""
        async for item in self.run_stream(redo.task, redo=redo):
            yield item


def _jsonable(state: Any) -> dict[str, Any]:
    """autogen's saved state holds datetimes; store them as ISO strings (its models parse them back)."""
    return json.loads(json.dumps(state, default=str))  # type: ignore[no-any-return]
