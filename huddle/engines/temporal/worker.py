"""`huddle worker`: a Temporal worker hosting huddle's session workflow and its activities.

Any number of workers, on any hosts, share one task queue; each needs the same settings (profiles, stores) and team
files. A session's workflow is cached on the worker that last ran it (Temporal's sticky queue); when that worker
dies, `STICKY_TIMEOUT` is how long its sessions wait before any other worker takes them over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, closing
from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from huddle.config.settings import Settings
from huddle.engines.temporal import recorded
from huddle.engines.temporal import workflow as session
from huddle.engines.temporal.activities import ModelActivities
from huddle.engines.temporal.connection import connect
from huddle.engines.temporal.recorded import run_parked
from huddle.engines.temporal.records import TurnRecords
from huddle.storage.sessions import SessionStore
from huddle.teams.kinds import load_any_team
from huddle.teams.spec import TeamSpec
from huddle.tools.mcp import open_mcp_tools, servers_key
from huddle.usage import UsageLedger

if TYPE_CHECKING:
    from huddle.teams.base import AnySpec

STICKY_TIMEOUT = timedelta(seconds=1)


async def run_worker(settings: Settings, teams: Sequence[str], stop: asyncio.Event | None = None) -> None:
    """Serve the task queue until `stop` is set (or forever); `teams` are loaded now, so a bad file fails at start."""
    deployment = session.Deployment.of(settings, teams or ["assistant"])
    with closing(UsageLedger(settings.ledger_location)) as ledger, SessionStore(settings.sessions_location) as sessions:
        async with hosting(settings, deployment, ledger=ledger, sessions=sessions):
            await (stop or asyncio.Event()).wait()


@asynccontextmanager
async def hosting(
    settings: Settings,
    deployment: session.Deployment,
    *,
    ledger: UsageLedger,
    sessions: SessionStore,
    task_queue: str | None = None,
) -> AsyncIterator[None]:
    """A worker for `deployment` polling `task_queue` (the settings' by default) while the block runs: model calls
    metered into `ledger`, turns recorded into `sessions`. One deployment per process (the workflow reads it)."""
    client = await connect(settings)
    session.deployment = deployment
    await _warm_up(deployment)
    servers = AsyncExitStack()
    await _hold_mcp_servers(deployment, servers)
    models = ModelActivities(ledger)
    records = TurnRecords(sessions)
    worker = Worker(
        client,
        task_queue=task_queue or settings.temporal.task_queue,
        workflows=[session.SessionWorkflow],
        activities=[models.model_call, records.record_turn, run_parked],
        workflow_runner=UnsandboxedWorkflowRunner(),
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
    )
    try:
        async with worker:
            yield
    finally:
        await models.close()
        await servers.aclose()


async def _hold_mcp_servers(deployment: session.Deployment, servers: AsyncExitStack) -> None:
    """Start the hosted teams' MCP servers here, on the worker's own event loop, for the worker's lifetime: a
    workflow's loop can start no process and open no socket, so its teams use these (each call a recorded step).
    A session taken over by another worker calls that worker's servers: keep MCP servers' state outside them."""
    for hosted in deployment.teams.values():
        for spec in _group_chats(hosted.spec):
            key = servers_key(spec.team.mcp)
            if spec.team.mcp and recorded.held(key) is None:
                recorded.hold(key, await servers.enter_async_context(open_mcp_tools(spec.team.mcp)))


def _group_chats(spec: AnySpec) -> list[TeamSpec]:
    """`spec` and every group chat nested in it (a pattern team's members may be teams)."""
    if isinstance(spec, TeamSpec):
        return [spec]
    nested = [load_any_team(m.team) if isinstance(m.team, str) else m.team for m in spec.members() if m.team]
    return [chat for team in nested for chat in _group_chats(team)]


async def _warm_up(deployment: session.Deployment) -> None:
    """Build each team once outside any workflow: the first build imports chromadb and loads tokenizers (seconds),
    which inside a workflow task would trip Temporal's deadlock detector (2 s) and fail that task once."""
    for name in {team.spec.team.name: name for name, team in deployment.teams.items()}.values():
        await deployment.build(name).close()
