"""The session workflow: one chat session, its team living inside it, a turn per Update.

The team is built inside the workflow from the worker's deployment (`Deployment`: its settings and team files, the
same on every worker), with three changes from in-process: its model clients are `RemoteModelClient`s (calls are
activities), its ledger is in memory (rebuilt by replay, so the budget governor decides the same way on any worker;
the shared ledger gets each attempt's row from the activity), and the profiles' own retries are off (Temporal's
retry policy takes them, `RemoteModelClient`). Blocking steps of the team's code are local activities
(`huddle.engines.temporal.recorded`).

Turns run one at a time (a lock), each the team's `run` under the caller's run id; `approve` takes up a run that
paused for approvals. Between turns, once Temporal suggests it, the workflow continues as new with the team's saved
state and the session's spending, so its history stays small however long the session lives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from autogen_core.models import ChatCompletionClient

    from huddle.config.settings import ModelProfile, Settings
    from huddle.engines.temporal import recorded  # noqa: F401 - installs the workflow's effects
    from huddle.engines.temporal.calls import REFUSED, ApproveRequest, SessionStart, TurnRequest
    from huddle.engines.temporal.records import TurnRecord
    from huddle.engines.temporal.remote_client import RemoteModelClient
    from huddle.errors import HuddleError
    from huddle.secrets import redact
    from huddle.teams.base import Team, build_team
    from huddle.teams.kinds import load_any_team
    from huddle.teams.results import RunResult
    from huddle.usage import UsageLedger, UsageRecord
    from huddle.usage.budget import Budget

if TYPE_CHECKING:
    from huddle.memory.store import VectorMemory
    from huddle.teams.base import AnySpec

RECORD_TIMEOUT = timedelta(seconds=30)


@dataclass
class HostedTeam:
    """A team a worker runs sessions of: its spec, and what an in-process team would be given besides the
    deployment's settings (a scenario trial brings its own settings, memory and workspace)."""

    spec: AnySpec
    settings: Settings | None = None
    memory: VectorMemory | None = None
    workspace: Path | None = None


@dataclass
class Deployment:
    """What every worker of a task queue must hold alike: the settings and the teams a session names (by the
    reference a worker was given, a preset name or a team file, or by the team's own name)."""

    settings: Settings
    teams: dict[str, HostedTeam] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings, references: Sequence[str]) -> Deployment:
        """The teams loaded now, so a bad file fails when the worker starts rather than in a session."""
        deployment = cls(settings)
        for reference in references:
            deployment.host(reference, HostedTeam(load_any_team(reference)))
        return deployment

    def host(self, reference: str, team: HostedTeam) -> None:
        self.teams[reference] = team
        self.teams.setdefault(team.spec.team.name, team)

    def team(self, name: str) -> HostedTeam:
        if name not in self.teams:
            self.host(name, HostedTeam(load_any_team(name)))
        return self.teams[name]

    def build(self, name: str, **kwargs: Any) -> Team:
        """The team `name`, built as a workflow runs it (`kwargs` as for `Team`)."""
        hosted = self.team(name)
        return build_team(
            hosted.spec,
            workflow_settings(hosted.settings or self.settings),
            memory=hosted.memory,
            workspace=hosted.workspace,
            **kwargs,
        )


def workflow_settings(settings: Settings) -> Settings:
    """The settings a workflow's team runs with: no disk cache, no client-side retries (Temporal's instead), and
    the active profile pinned to the one these settings choose (with every profile now configured, the choice
    "the built-in default when its key is set, else local" would always take the default)."""
    profiles = {name: p.model_copy(update={"max_retries": 0}) for name, p in settings.profiles.items()}
    active = settings.model or settings.profile().name
    return settings.model_copy(update={"models": profiles, "cache": False, "model": active})


deployment: Deployment | None = None
"""Set by `huddle worker` before its worker starts."""


@workflow.defn(name="huddle.session", sandboxed=False)
class SessionWorkflow:
    @workflow.init
    def __init__(self, start: SessionStart) -> None:
        """The team is built here, before any Update is handled (an Update may arrive with the workflow's start)."""
        self._lock = asyncio.Lock()
        self._session_id = start.session_id
        self._tasks: dict[str, str] = {}  # run id -> the message that started it (an approval resumes a run)
        self._ended = False
        self._turns = 0
        assert deployment is not None, "huddle worker sets the deployment before it starts"
        try:
            self._team = self._build(deployment, start)
        except HuddleError as exc:  # a team this worker cannot build: the session fails, and its caller hears why
            raise _final(exc) from None
        self._budget = self._team.governor.budget

    @staticmethod
    def _build(deployment: Deployment, start: SessionStart) -> Team:
        """The session's team as a workflow runs it: model calls as activities (with the profiles' retries in their
        retry policy) and an in-memory ledger holding what the session has spent so far."""
        hosted = deployment.team(start.team)
        retries = {name: p.max_retries for name, p in (hosted.settings or deployment.settings).profiles.items()}

        def remote(raw: ChatCompletionClient, profile: ModelProfile, agent: str) -> ChatCompletionClient:
            return RemoteModelClient(raw, profile, agent, retries.get(profile.name, 2))

        ledger = UsageLedger()
        for row in start.spent:
            ledger.record(UsageRecord.model_validate(row))
        return deployment.build(start.team, ledger=ledger, session_id=start.session_id, wrap_client=remote)

    @workflow.run
    async def run(self, start: SessionStart) -> None:
        team = self._team
        async with self._lock:
            if start.state is not None:
                await team.load_state(start.state)
            if start.run_state is not None:
                team.state.restore(start.run_state)
        await workflow.wait_condition(
            lambda: self._ended or self._turns >= start.turns_per_run or workflow.info().is_continue_as_new_suggested()
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._ended:
            await team.close()
            return
        async with self._lock:
            state = await team.save_state()
            spent = [r.model_dump(mode="json") for r in team.ledger.records()]
            workflow.continue_as_new(
                start.model_copy(update={"state": state, "run_state": team.state.snapshot(), "spent": spent})
            )

    @workflow.update(name="turn")
    async def turn(self, request: TurnRequest) -> dict[str, Any]:
        """One user message: the team's run, its `RunResult` as JSON. A customer's answer to calls waiting for
        approval ("yes", read by a member that answers for the customer) takes the paused run up instead."""
        team = self._team
        async with self._lock:
            self._hold_to(request.budget)
            answer = team.customer_decisions(request.task)
            if answer is not None:
                result = await _failing_the_update(team.resume(answer))
            else:
                result = await _failing_the_update(team.run(request.task, run_id=request.run_id))
                self._tasks[result.run_id] = request.task
            self._turns += 1
            await self._record(result)
        return result.model_dump(mode="json")

    @workflow.update(name="approve")
    async def approve(self, request: ApproveRequest) -> dict[str, Any]:
        """Decisions for the calls the last run paused on; the run goes on (or stays paused for the rest)."""
        team = self._team
        async with self._lock:
            self._hold_to(request.budget)
            result = await _failing_the_update(team.resume(request.decisions, run_id=request.run_id))
            await self._record(result)
        return result.model_dump(mode="json")

    def _hold_to(self, budget: Budget | None) -> None:
        """The run's budget: the caller's (a served key's limits folded in), else the workers' settings'."""
        self._team.governor.budget = budget if budget is not None else self._budget

    async def _record(self, result: RunResult) -> None:
        """The turn into the shared session store (an activity: any worker, idempotent by run id)."""
        team = self._team
        awaiting = bool(result.pending)
        record = TurnRecord(
            session_id=self._session_id,
            team=team.spec.team.name,
            task=self._tasks.get(result.run_id, team.state.task),
            run_id=result.run_id,
            answer=result.answer,
            stop_reason=result.stop_reason,
            awaiting=awaiting,
            state=await team.save_state() if result.answer or awaiting else None,
            run_state=team.state.snapshot() if awaiting else None,
            decisions=[d.model_dump(mode="json") for d in result.decisions],
            messages=[m.model_dump(mode="json") for m in result.messages],
        )
        await workflow.execute_activity("huddle.record_turn", record, start_to_close_timeout=RECORD_TIMEOUT)

    @approve.validator
    def _check(self, request: ApproveRequest) -> None:
        """Decisions that do not fit the pending calls are refused before they enter the history."""
        try:
            self._team.check_decisions(request.decisions)
        except HuddleError as exc:
            raise _final(exc, REFUSED) from None

    @workflow.signal(name="end")
    def end(self) -> None:
        self._ended = True

    @workflow.query(name="pending")
    def pending(self) -> list[dict[str, Any]]:
        return [p.model_dump(mode="json") for p in self._team.state.waiting]


async def _failing_the_update(run: Awaitable[RunResult]) -> RunResult:
    """A run that raised (its MCP servers did not start) fails its Update, with the reason, and the session lives
    on; any other exception would fail the workflow task, which Temporal retries for ever."""
    try:
        return await run
    except HuddleError as exc:
        raise _final(exc) from None


def _final(exc: HuddleError, kind: str | None = None) -> ApplicationError:
    """`exc` as a failure Temporal does not retry (it fails the workflow or the Update, not its task), its text
    masked, typed `kind` (the error's class by default)."""
    return ApplicationError(redact(str(exc)), type=kind or type(exc).__name__, non_retryable=True)
