"""The scenario runner: every trial on a fresh team, a fresh copy of the database and a fresh memory scope.

Trials are independent, so pass^k over them measures the team; trials run concurrently up to a limit. A scripted
model gets one `ScriptedServer` per rule file per suite; a simulated customer is a model of its own, metered like
the team. One broken trial is a result (``status: error``), not the end of the suite; a config mistake stops it.

On the Temporal engine each trial is a session workflow and each customer turn an Update, on a worker this runner
hosts on a task queue of its own: a trial's database, memory and workspace are this process's temporary files, which
no other worker could reach. The team's code, its model calls (activities) and its approvals are the engine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from huddle.agents.approval import ApprovalDecision, PendingCall, ReplyDecider, reply_decider
from huddle.config.yamlfile import load_model
from huddle.engines import require_temporal
from huddle.errors import ConfigError
from huddle.evals.approvals import decisions_for, waiting_text
from huddle.evals.checks import Trace, evaluate
from huddle.evals.results import SuiteResult, TrialResult, summarise
from huddle.evals.spec import SCENARIO_FAULTS, ApprovalTurn, Scenario, ScriptedModel, is_rule_file
from huddle.secrets import redact
from huddle.testing import ScriptedServer
from huddle.usage import Totals

if TYPE_CHECKING:
    from huddle.config.settings import ModelProfile, Settings
    from huddle.engines.temporal.workflow import Deployment
    from huddle.evals.cassette import Cassette
    from huddle.memory.store import VectorMemory
    from huddle.teams.results import RunResult
    from huddle.teams.spec import TeamSpec
    from huddle.usage import UsageLedger

_OPENER = "Hi! How can I help you today?"  # what support says before a simulated customer's first message
Engine = Literal["local", "temporal"]


class Conversation(Protocol):
    """A trial's team as the customer talks to it: a `Team` in this process, or a `TemporalSession`."""

    async def run(self, task: str) -> RunResult: ...

    async def resume(self, decisions: dict[str, ApprovalDecision]) -> RunResult: ...

    async def close(self) -> None: ...


@dataclass
class _Prepared:
    """A scenario ready for its trials: its team, settings and knowledge scope."""

    scenario: Scenario
    spec: TeamSpec
    settings: Settings
    knowledge_scope: str | None
    decider: ReplyDecider | None


class ScenarioRunner:
    """Runs scenarios' trials (concurrently up to `concurrency`), each on a fresh team, database and memory scope.

    `model` overrides every scenario's model; `cassette` records or replays every model call; `memory` defaults to
    a temporary store removed afterwards (scenarios never touch the user's own memory); `on_trial` is called as each
    trial finishes (a progress bar); `engine` is where the trials' teams run.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        trials: int = 1,
        concurrency: int = 1,
        model: str | None = None,
        cassette: Cassette | None = None,
        ledger: UsageLedger | None = None,
        memory: VectorMemory | None = None,
        on_trial: Callable[[TrialResult], None] | None = None,
        engine: Engine = "local",
    ) -> None:
        if trials < 1 or concurrency < 1:
            raise ValueError("trials and concurrency must be at least 1")
        if engine == "temporal" and cassette is not None:
            raise ConfigError("cassettes record and replay in-process runs: leave out --engine temporal with them")
        self.engine = engine
        self.settings = settings
        self.trials = trials
        self.concurrency = concurrency
        self.model = model
        self.cassette = cassette
        self.on_trial = on_trial
        self._ledger = ledger
        self._own_ledger = ledger is None
        self._memory = memory
        self._workdir: Path | None = None
        self._servers: dict[str, ScriptedServer] = {}
        self._scopes: list[str] = []
        self._takes_database: dict[str, bool] = {}
        self._deployment: Deployment | None = None
        self._task_queue = f"huddle-scenarios-{uuid.uuid4().hex[:8]}"

    async def run(self, scenarios: Sequence[Scenario]) -> SuiteResult:
        """Run every scenario's trials and summarise; raises `ConfigError` when a team or model cannot be built."""
        started = time.perf_counter()
        self._workdir = Path(tempfile.mkdtemp(prefix="huddle-scenarios-"))
        try:
            prepared = [await self._prepare(s) for s in scenarios]
            gate = asyncio.Semaphore(self.concurrency)

            async def one(item: _Prepared, trial: int) -> TrialResult:
                async with gate:
                    result = await self._trial(item, trial)
                if self.on_trial is not None:
                    self.on_trial(result)
                return result

            async with self._engine(prepared):
                jobs = [one(item, trial) for item in prepared for trial in range(1, self.trials + 1)]
                results = await asyncio.gather(*jobs)
        finally:
            await self._clean_up()
        return summarise(scenarios, results, self.trials, time.perf_counter() - started)

    @contextlib.asynccontextmanager
    async def _engine(self, prepared: Sequence[_Prepared]) -> AsyncIterator[None]:
        """On the Temporal engine, this runner's worker for the trials' sessions while the trials run."""
        if self.engine == "local":
            yield
            return
        require_temporal()
        from huddle.engines.temporal.worker import hosting
        from huddle.engines.temporal.workflow import Deployment, HostedTeam
        from huddle.storage.sessions import SessionStore

        assert self._workdir is not None
        self._deployment = Deployment(self.settings)
        for item in prepared:  # each scenario's team, for the worker to build once before the first trial
            self._deployment.host(item.scenario.name, HostedTeam(item.spec, item.settings, memory=self.memory))
        with SessionStore(self._workdir / "sessions.sqlite") as sessions:
            async with hosting(
                self.settings, self._deployment, ledger=self.ledger, sessions=sessions, task_queue=self._task_queue
            ):
                yield

    async def _open(self, item: _Prepared, spec: TeamSpec, session: str, workspace: Path) -> Conversation:
        """The trial's team: built here, or a session workflow on this runner's worker."""
        if self._deployment is None:
            from huddle.teams.group_chat import GroupChatTeam

            return GroupChatTeam(
                spec,
                item.settings,
                ledger=self.ledger,
                memory=self.memory,
                session_id=session,
                workspace=workspace,
                wrap_client=self.cassette.wrap if self.cassette is not None else None,
            )
        from huddle.engines.temporal.sessions import TemporalSession
        from huddle.engines.temporal.workflow import HostedTeam

        self._deployment.host(session, HostedTeam(spec, item.settings, memory=self.memory, workspace=workspace))
        return await TemporalSession.open(self.settings, session, session, task_queue=self._task_queue)

    @property
    def ledger(self) -> UsageLedger:
        if self._ledger is None:
            from huddle.usage import UsageLedger

            self._ledger = UsageLedger(self.settings.ledger_path)
        return self._ledger

    @property
    def memory(self) -> VectorMemory:
        if self._memory is None:
            from huddle.memory.embedders import embedder_from_settings
            from huddle.memory.store import VectorMemory

            assert self._workdir is not None
            embedder = embedder_from_settings(self.settings)
            self._memory = VectorMemory(embedder, path=self._workdir / "memory", collection="scenarios")
        return self._memory

    async def _prepare(self, scenario: Scenario) -> _Prepared:
        from huddle.teams.spec import load_team

        spec = load_team(scenario.team)
        settings = self.settings.model_copy(deep=True)
        if self.cassette is not None:
            settings.cache = False  # a cached answer would never reach the cassette
            if self.cassette.mode == "replay":
                settings.models.update(self.cassette.stand_in_profiles())
        choice = self.model or scenario.model
        if is_rule_file(choice):
            assert choice is not None
            name = f"rules:{Path(choice).stem}"
            if self.cassette is None or self.cassette.mode == "record":
                settings.models[name] = self._scripted_profile(name, Path(choice))
            elif name not in settings.models:
                raise ConfigError(f"cassette {self.cassette.path} has no recording made with {choice}; record one")
            settings.model = name
        elif choice:
            settings.model = choice
        settings.profile(settings.model)  # an unknown profile is a config error now, not in every trial
        scope = None
        if scenario.knowledge:
            scope = self._scope("team", f"kb-{scenario.name}")
            await asyncio.to_thread(
                self.memory.add_documents, [Path(p) for p in scenario.knowledge], scope=scope, agent="scenario"
            )
        decider = reply_decider(m.use for m in spec.agents if m.use)
        return _Prepared(scenario=scenario, spec=spec, settings=settings, knowledge_scope=scope, decider=decider)

    def _scripted_profile(self, name: str, rules_file: Path) -> ModelProfile:
        """A profile on a scripted server answering from `rules_file` (one server per file per suite)."""
        from huddle.config.settings import ModelProfile

        key = str(rules_file)
        if key not in self._servers:
            script = load_model(rules_file, ScriptedModel)
            self._servers[key] = ScriptedServer(
                script.rules,
                fallback=script.fallback,
                fault_rate=script.fault_rate,
                seed=script.seed,
                fault_kinds=[*SCENARIO_FAULTS],
            ).start()
        # With injected faults the client retries as it would against a flaky real server.
        retries = 5 if self._servers[key].fault_rate else 0
        return ModelProfile(name=name, model="scripted", base_url=self._servers[key].base_url, max_retries=retries)

    def _scope(self, kind: str, label: str) -> str:
        scope = f"{kind}:{label}-{uuid.uuid4().hex[:6]}"
        self._scopes.append(scope)
        return scope

    async def _trial(self, item: _Prepared, trial: int) -> TrialResult:
        from huddle.evals.cassette import cassette_scope

        scenario = item.scenario
        session = f"{scenario.name}-{trial}-{uuid.uuid4().hex[:6]}"
        assert self._workdir is not None
        folder = self._workdir / session
        folder.mkdir(parents=True)
        database = _fresh_database(folder / "database.sqlite", scenario.database)
        spec = self._trial_spec(item, self._scope("user", session), database)
        trace, error = Trace(), None
        team: Conversation | None = None
        started = time.perf_counter()
        self._scopes.append(f"session:{session}")
        scope = f"{scenario.name}#{trial}"
        try:
            team = await self._open(item, spec, session, folder / "workspace")
            with cassette_scope(scope):
                await self._converse(item, team, trace, session, scope)
        except ConfigError:
            raise
        except Exception as exc:  # one broken trial is a result, not the end of the suite
            error = redact(f"{type(exc).__name__}: {exc}")[:500]
        finally:
            if team is not None:
                await team.close()
        latency = time.perf_counter() - started
        if self.cassette is not None and error is None:
            misses = self.cassette.misses_in(scope)
            error = str(misses[0]) if misses else None
        return self._verdict(item, trial, trace, database, error, latency, session)

    async def _converse(self, item: _Prepared, team: Conversation, trace: Trace, session: str, scope: str) -> None:
        """The customer's turns, each one run of the team (or the paused run taken up with their decisions); stops
        early when a cassette missed."""
        customer = _Customer(item, self, session) if item.scenario.simulator is not None else None
        scripted = list(item.scenario.user or [])
        reply: str | None = None
        pending: list[PendingCall] = []
        while True:
            turn = await customer.next(reply) if customer is not None else (scripted.pop(0) if scripted else None)
            if turn is None:
                return
            decisions = self._decisions(item, turn, pending, len(trace.customer))
            trace.customer.append(turn.describe() if isinstance(turn, ApprovalTurn) else turn)
            if decisions is not None:
                trace.decide(decisions)
                result = await team.resume(decisions)
            else:
                assert isinstance(turn, str)  # an approval turn always decides (or raises)
                result = await team.run(turn)
            for message in result.messages:
                if message.source != "user":
                    trace.observe(message)
            trace.results.append(result)
            pending = result.pending
            trace.ask(pending)
            reply = waiting_text(pending, item.decider) if pending else result.answer
            trace.replies.append(reply)
            if self.cassette is not None and self.cassette.misses_in(scope):
                return

    @staticmethod
    def _decisions(
        item: _Prepared, turn: str | ApprovalTurn, pending: list[PendingCall], index: int
    ) -> dict[str, ApprovalDecision] | None:
        """What a user turn decides about the calls waiting from the last one: an approval turn's decisions, the
        customer's answer as a member reads it, or None (a new message; whatever waited is dropped)."""
        if isinstance(turn, ApprovalTurn):
            return decisions_for(turn, pending, index)
        if not pending or item.decider is None:
            return None
        answer = item.decider.approval_reply(turn, pending)
        return None if answer is None else dict(answer)

    def _trial_spec(self, item: _Prepared, user_scope: str, database: Path) -> TeamSpec:
        """The scenario's team with this trial's memory scopes and database."""
        members = []
        for member in item.spec.agents:
            update: dict[str, Any] = {}
            if member.role == "memory":
                update["memory_scopes"] = [user_scope] + ([item.knowledge_scope] if item.knowledge_scope else [])
            if member.use is not None and self._accepts_database(member.use):
                update["config"] = {**member.config, "database": str(database)}
            members.append(member.model_copy(update=update))
        return item.spec.model_copy(update={"agents": members})

    def _accepts_database(self, reference: str) -> bool:
        """Whether a custom agent class takes a ``database`` argument: it then gets the trial's database."""
        if reference not in self._takes_database:
            from huddle.tools.plugins import AGENTS_GROUP, resolve

            target = resolve(reference, AGENTS_GROUP, where=f"agent {reference!r}")
            try:
                self._takes_database[reference] = "database" in inspect.signature(target).parameters
            except (TypeError, ValueError):
                self._takes_database[reference] = False
        return self._takes_database[reference]

    def _verdict(
        self,
        item: _Prepared,
        trial: int,
        trace: Trace,
        database: Path,
        error: str | None,
        latency: float,
        session: str,
    ) -> TrialResult:
        scenario = item.scenario
        checks = evaluate(scenario.expect, trace, database if scenario.database else None)
        failures = [str(c) for c in checks if not c.passed]
        usage = Totals()
        for result in trace.results:
            usage = Totals(**{k: getattr(usage, k) + getattr(result.usage, k) for k in Totals.model_fields})
        return TrialResult(
            scenario=scenario.name,
            trial=trial,
            status="error" if error else ("fail" if failures else "pass"),
            failures=failures,
            error=error,
            checks=checks,
            customer_turns=len(trace.customer),
            turns=trace.turns,
            model_calls=usage.calls,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=round(usage.cost_usd, 8),
            latency_s=round(latency, 3),
            intents=trace.intents,
            tool_calls=trace.tool_calls,
            approvals=trace.asked,
            customer=trace.customer,
            replies=trace.replies,
            usage_by_agent=self.ledger.by("agent", session_id=session),
            session_id=session,
        )

    async def _clean_up(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()
        if self._memory is not None and self._scopes:
            for scope in self._scopes:
                await asyncio.to_thread(self._memory.forget_scope, scope)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        if self._own_ledger and self._ledger is not None:
            self._ledger.close()
            self._ledger = None


class _Customer:
    """A simulated customer: a model that follows the scenario's instruction and ends by saying the stop token."""

    def __init__(self, item: _Prepared, runner: ScenarioRunner, session: str) -> None:
        from autogen_core.models import LLMMessage, SystemMessage

        from huddle import prompts
        from huddle.models.factory import build_client

        spec = item.scenario.simulator
        assert spec is not None
        self.spec = spec
        self.session = session
        settings = item.settings
        self.client = build_client(
            settings.profile(spec.profile or settings.model),
            runner.ledger,
            agent="customer",
            profiles=settings.profiles,
            wrap=runner.cassette.wrap if runner.cassette is not None else None,
        )
        system = prompts.render("support_customer", instruction=spec.instruction, stop=spec.stop)
        self.history: list[LLMMessage] = [SystemMessage(content=system)]
        self.sent = 0

    async def next(self, reply: str | None) -> str | None:
        """The customer's next message after support's `reply` (None before the first), or None when done."""
        from autogen_core.models import AssistantMessage, UserMessage

        from huddle.usage import usage_scope

        if self.sent >= self.spec.max_turns:
            return None
        self.history.append(UserMessage(content=reply if reply is not None else _OPENER, source="support"))
        with usage_scope(session_id=self.session):
            result = await self.client.create(self.history)
        text = (result.content if isinstance(result.content, str) else "").strip()
        if not text or self.spec.stop in text:
            return None
        self.history.append(AssistantMessage(content=text, source="customer"))
        self.sent += 1
        return text


def _fresh_database(path: Path, fixture: str | None) -> Path:
    """A new SQLite file with the fixture's SQL run in it (or empty)."""
    with sqlite3.connect(path) as connection:
        if fixture is not None:
            try:
                connection.executescript(Path(fixture).read_text(encoding="utf-8"))
            except sqlite3.Error as exc:
                raise ConfigError(f"{fixture}: the database fixture does not load: {exc}") from None
    return path
