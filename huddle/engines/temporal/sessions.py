"""A session on the Temporal engine, from the caller's side: start (or join) its workflow, send turns and approvals.

The workflow id is the session's (`workflow_id`), so every process that names the session reaches the same workflow,
on whichever worker runs it. A call waits while no worker is running: Temporal keeps the Update until one starts.
"""

from __future__ import annotations

import uuid

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from huddle.agents.approval import ApprovalDecision, PendingCall
from huddle.config.settings import Settings
from huddle.engines.temporal.calls import REFUSED, ApproveRequest, SessionStart, TurnRequest, failure_text
from huddle.engines.temporal.connection import connect
from huddle.errors import HuddleError
from huddle.secrets import redact
from huddle.teams.results import RunResult
from huddle.usage.budget import Budget


class UpdateRefused(HuddleError):
    """The session's workflow refused the decisions (they do not fit its pending calls); nothing ran."""


def workflow_id(session_id: str) -> str:
    return f"huddle-session-{session_id}"


class TemporalSession:
    """One session's workflow handle; it reads like a `Team`: `run` a message, `resume` a paused run, `close`."""

    def __init__(self, client: Client, handle: WorkflowHandle[object, None], session_id: str) -> None:
        self.client, self.handle, self.session_id = client, handle, session_id

    @classmethod
    async def open(
        cls, settings: Settings, team: str, session_id: str | None = None, *, task_queue: str | None = None
    ) -> TemporalSession:
        """Join the session's workflow, or start it for `team` (a preset name, a team file or a team's name the
        workers know) on `task_queue` (the settings' by default)."""
        client = await connect(settings)
        session_id = session_id or uuid.uuid4().hex[:12]
        handle = await client.start_workflow(
            "huddle.session",
            SessionStart(team=team, session_id=session_id, turns_per_run=settings.temporal.turns_per_run),
            id=workflow_id(session_id),
            task_queue=task_queue or settings.temporal.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        return cls(client, handle, session_id)

    @classmethod
    async def join(cls, settings: Settings, session_id: str) -> TemporalSession:
        """The running workflow of an existing session (a `HuddleError` if there is none)."""
        client = await connect(settings)
        handle = client.get_workflow_handle(workflow_id(session_id))
        try:
            await handle.describe()
        except RPCError:
            raise HuddleError(
                f"no session {session_id!r} on the Temporal engine ({settings.temporal.address})"
            ) from None
        return cls(client, handle, session_id)

    async def pending(self) -> list[PendingCall]:
        """The tool calls the session's last run waits on."""
        return [PendingCall.model_validate(p) for p in await self.handle.query("pending", result_type=list)]

    async def run(self, task: str, run_id: str | None = None, *, budget: Budget | None = None) -> RunResult:
        """One message; `budget` holds the run (else the workers' settings' budget does). Anything key-shaped in it is
        masked before it enters the session's history (Temporal keeps every Update's input)."""
        run_id = run_id or uuid.uuid4().hex[:12]
        return await self._update("turn", TurnRequest(task=redact(task), run_id=run_id, budget=budget))

    async def resume(
        self, decisions: dict[str, ApprovalDecision], run_id: str | None = None, *, budget: Budget | None = None
    ) -> RunResult:
        return await self._update("approve", ApproveRequest(decisions=decisions, run_id=run_id, budget=budget))

    async def _update(self, name: str, request: TurnRequest | ApproveRequest) -> RunResult:
        """The Update's result; a refused Update or a failed session is a `HuddleError` saying why."""
        try:
            return RunResult.model_validate(await self.handle.execute_update(name, request, result_type=dict))
        except WorkflowUpdateFailedError as exc:
            refused = isinstance(exc.cause, ApplicationError) and exc.cause.type == REFUSED
            raise (UpdateRefused if refused else HuddleError)(
                f"session {self.session_id}: {failure_text(exc.cause)}"
            ) from None
        except RPCError as exc:
            raise HuddleError(f"session {self.session_id}: {await self._failure() or exc.message}") from None

    async def _failure(self) -> str | None:
        """Why the session's workflow failed (a team its workers cannot build), None while it has not."""
        if (await self.handle.describe()).status != WorkflowExecutionStatus.FAILED:
            return None
        try:
            await self.handle.result()
        except WorkflowFailureError as exc:
            return failure_text(exc.cause)
        return None

    async def close(self) -> None:
        """The session is over: its workflow completes (its history stays in Temporal for inspection)."""
        await self.handle.signal("end")
