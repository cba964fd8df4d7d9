"""`huddle worker`: a Temporal worker hosting huddle's session workflow and its activities.

Any number of workers, on any hosts, share one task queue; each needs the same settings (profiles, stores) and team
files. A session's workflow is cached on the worker that last ran it (Temporal's sticky queue); when that worker
dies, `STICKY_TIMEOUT` is how long its sessions wait before any other worker takes them over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from huddle.config.settings import Settings
from huddle.engines.temporal import workflow as session
from huddle.engines.temporal.activities import ModelActivities
from huddle.engines.temporal.connection import connect
from huddle.engines.temporal.recorded import run_parked
from huddle.engines.temporal.records import TurnRecords
from huddle.storage.sessions import SessionStore
from huddle.teams.base import build_team
from huddle.teams.kinds import load_any_team
from huddle.usage import UsageLedger

STICKY_TIMEOUT = timedelta(seconds=1)


async def run_worker(settings: Settings, teams: Sequence[str], stop: asyncio.Event | None = None) -> None:
    """Serve the task queue until `stop` is set (or forever); `teams` are loaded now, so a bad file fails at start."""
    client = await connect(settings)
    session.deployment = session.Deployment(settings, {name: load_any_team(name) for name in teams or ["assistant"]})
    await _warm_up(session.deployment)
    ledger = UsageLedger(settings.ledger_location)
    models = ModelActivities(settings, ledger)
    records = TurnRecords(SessionStore(settings.sessions_location))
    worker = Worker(
        client,
        task_queue=settings.temporal.task_queue,
        workflows=[session.SessionWorkflow],
        activities=[models.model_call, records.record_turn, run_parked],
        workflow_runner=UnsandboxedWorkflowRunner(),
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
    )
    try:
        async with worker:
            await (stop or asyncio.Event()).wait()
    finally:
        await models.close()
        ledger.close()
        records.store.close()


async def _warm_up(deployment: session.Deployment) -> None:
    """Build each team once outside any workflow: the first build imports chromadb and loads tokenizers (seconds),
    which inside a workflow task would trip Temporal's deadlock detector (2 s) and fail that task once."""
    for spec in deployment.teams.values():
        await build_team(spec, deployment.workflow_settings()).close()
