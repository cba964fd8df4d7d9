"""The turn-record activity: each turn a workflow finishes lands in the shared session store, so `huddle sessions`
and `huddle runs` on any host list the sessions the Temporal engine runs (their history stays in Temporal too).

Idempotent by run id: a retried or replayed record of a turn the store already has changes nothing; a turn that
paused for approvals and then ended is taken up and finished, and one a new message overtook is dropped (as
`DurableTeam` does in-process).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity

from huddle.storage.sessions import SessionStore
from huddle.teams.durable import OVERTAKEN


class TurnRecord(BaseModel):
    session_id: str
    team: str
    task: str
    run_id: str
    answer: str
    stop_reason: str
    awaiting: bool = False
    state: dict[str, Any] | None = None
    run_state: dict[str, Any] | None = None
    decisions: list[dict[str, Any]] = Field(default_factory=list)
    messages: list[dict[str, Any]] = Field(default_factory=list)


class TurnRecords:
    def __init__(self, store: SessionStore) -> None:
        self.store = store

    @activity.defn(name="huddle.record_turn")
    async def record_turn(self, record: TurnRecord) -> None:
        store, session = self.store, record.session_id
        known = store.turn_of_run(record.run_id)
        if known is not None and known.status != "awaiting_approval":
            return  # recorded already: a retry or a replay
        if known is None:
            if store.awaiting(session) is not None:  # a new message, not an answer: the paused calls never run
                store.drop_awaiting(session, OVERTAKEN)
            turn = store.begin_turn(session, record.team, record.task, record.run_id)
        else:
            turn = known.turn
            store.take_up(session, turn, record.run_id)
        decisions, messages = record.decisions, record.messages
        if record.awaiting:
            store.finish_turn(
                session,
                turn,
                status="awaiting_approval",
                state=record.state,
                run_state=record.run_state,
                decisions=decisions,
                messages=messages,
            )
        elif record.answer:
            store.finish_turn(
                session, turn, answer=record.answer, state=record.state, decisions=decisions, messages=messages
            )
        else:
            store.finish_turn(
                session, turn, status="failed", error=record.stop_reason, decisions=decisions, messages=messages
            )
