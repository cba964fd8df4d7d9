"""Scenarios: a scripted (or simulated) customer, a team, and outcomes that can be checked, run like a test suite.

A scenario file says which team serves the customer, which policy documents it may recall, which database it acts on,
what the customer says (or how a simulated customer behaves), and what must be true afterwards::

    name: refund-damaged-item
    team: support                    # preset name or path to a team YAML
    model: default                   # a profile, or a scripted-model rule file (models/scripted.yaml); optional
    knowledge: [kb/returns.md]       # ingested into a fresh memory scope for the scenario
    database: fixtures/orders.sql    # loaded into a fresh SQLite file per trial
    user:                            # the customer's messages; or `simulator: {profile, instruction, stop}`
      - "Hi, order 1042 arrived broken. I want my money back."
      - "Yes, please refund it."
    expect:
      intent: refund
      tools_called: [{name: lookup_order, args: {order_id: "1042"}}, {name: issue_refund}]
      tools_not_called: [cancel_order]
      database: {"SELECT status FROM orders WHERE id='1042'": [["refunded"]]}
      reply_contains: ["refund"]
      max_turns: 16
      max_cost_usd: 0.02

As in tau-bench, a trial passes only if the database ends in the expected state and the customer was told what they
had to be told: a reply that sounds right does not pass a trial whose refund never happened. Every trial runs on a
fresh team, a fresh copy of the database and a fresh memory scope for the customer, so trials are independent and
pass^k (the chance that all of k trials of a scenario pass, estimated as C(c,k)/C(n,k) from c passes in n trials and
averaged over scenarios) measures how reliably the team behaves, not how lucky one run was.

`run` (or ``huddle scenario run``) runs a suite; ``--record``/``--replay`` put a `huddle.evals.cassette.Cassette` under
every model client so a suite recorded once runs offline. A scenario's `model` may be a scripted-model rule file: a
`huddle.testing.ScriptedServer` answers from its rules, so a suite runs in CI with no model at all.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import math
import re
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from xml.etree import ElementTree

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, computed_field, model_validator

from huddle.config.yamlfile import load_model
from huddle.errors import ConfigError
from huddle.secrets import redact
from huddle.testing import Fault, Rule, ScriptedServer
from huddle.usage import Totals

if TYPE_CHECKING:
    from autogen_agentchat.messages import BaseChatMessage

    from huddle.config.settings import ModelProfile, Settings
    from huddle.evals.cassette import Cassette
    from huddle.memory.store import VectorMemory
    from huddle.teams.group_chat import GroupChatTeam, RunResult
    from huddle.teams.spec import TeamSpec
    from huddle.usage import UsageLedger

YAML_SUFFIXES = (".yaml", ".yml")
DEFAULT_STOP = "###STOP###"
_OPENER = "Hi! How can I help you today?"  # what support says before a simulated customer's first message

# --------------------------------------------------------------------------------------------------------------------
# The scenario file
# --------------------------------------------------------------------------------------------------------------------


def _existing_file(value: str, info: ValidationInfo) -> str:
    """A path relative to the scenario file (``context["base"]``), made absolute; it must exist."""
    base = (info.context or {}).get("base")
    path = Path(value).expanduser()
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    if not path.is_file():
        raise ValueError(f"no such file: {value} (paths are relative to the scenario file)")
    return str(path.resolve())


def _team(value: str, info: ValidationInfo) -> str:
    """A preset name as it is, a team file resolved like any other path."""
    from huddle.teams.spec import preset_names

    if not Path(value).suffix and value in preset_names():
        return value
    return _existing_file(value, info)


def _model(value: str | None, info: ValidationInfo) -> str | None:
    """A profile name as it is; a scripted-model rule file (``.yaml``) resolved like any other path."""
    if value is None or not value.endswith(YAML_SUFFIXES):
        return value
    return _existing_file(value, info)


ExistingFile = Annotated[str, AfterValidator(_existing_file)]


class ToolExpectation(BaseModel):
    """A tool call that must have happened: its name, arguments it must have had (a subset), and its outcome."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict, description="Arguments the call must have had (others may be).")
    ok: bool | None = Field(None, description="true: it must have succeeded; false: failed or refused; unset: either.")

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        outcome = "" if self.ok is None else (" succeeding" if self.ok else " failing")
        return f"{self.name}({args}){outcome}"


class Simulator(BaseModel):
    """A model playing the customer: it follows `instruction` and ends the chat by saying `stop`."""

    model_config = ConfigDict(extra="forbid")

    profile: str | None = Field(None, description="Model profile for the customer; default: the scenario's model.")
    instruction: str = Field(min_length=1, max_length=4000, description="Who the customer is and what they want.")
    stop: str = Field(DEFAULT_STOP, min_length=1, description="What the customer says when done.")
    max_turns: int = Field(6, ge=1, le=30, description="At most this many customer messages.")


class Expectations(BaseModel):
    """What must be true when the conversation is over; every one that fails is named in the trial's result."""

    model_config = ConfigDict(extra="forbid")

    intent: str | list[str] | None = Field(
        None, description="The intent of the first customer message, or the list of every message's intent."
    )
    tools_called: list[ToolExpectation] = Field(default_factory=list)
    tools_not_called: list[str] = Field(default_factory=list)
    database: dict[str, list[list[Any]]] = Field(
        default_factory=dict, description="SQL query -> the rows it must return from the trial's database."
    )
    reply_contains: list[str] = Field(default_factory=list, description="Said to the customer (any reply, any case).")
    reply_not_contains: list[str] = Field(default_factory=list, description="Never said to the customer (any case).")
    max_turns: int | None = Field(None, ge=1, description="At most this many agent turns in the whole conversation.")
    max_cost_usd: float | None = Field(None, ge=0, description="At most this many dollars of the team's model calls.")


class Scenario(BaseModel):
    """One scenario file (see the module docstring for an example)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
    description: str | None = None
    team: Annotated[str, AfterValidator(_team)] = "support"
    model: Annotated[str | None, AfterValidator(_model)] = None
    knowledge: list[ExistingFile] = Field(default_factory=list)
    database: ExistingFile | None = Field(None, description="A .sql file loaded into a fresh SQLite file per trial.")
    user: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)
    simulator: Simulator | None = None
    expect: Expectations = Expectations()
    path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _one_customer(self) -> Scenario:
        if (self.user is None) == (self.simulator is None):
            raise ValueError("give exactly one of `user` (the customer's messages) or `simulator`")
        return self


SCENARIO_FAULTS = (
    Fault(kind="rate_limit", retry_after=0.05),
    Fault(kind="server_error"),
    Fault(kind="cut_stream"),
    Fault(kind="malformed_tool_json"),
)


class ScriptedModel(BaseModel):
    """A scripted-model rule file: rules matched in order against each request (first match answers)."""

    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(min_length=1)
    fallback: str = "OK"
    fault_rate: float = Field(
        0.0, ge=0, le=1, description="Share of requests answered with a random fault (429, 500, cut stream, ...)."
    )
    seed: int = Field(0, description="Seeds the fault injection, so a faulty run is reproducible.")


def load_scenario(path: Path | str) -> Scenario:
    """Read and check one scenario file, its team and its rule file; errors name the file, line and field."""
    from huddle.teams.spec import load_team

    path = Path(path)
    scenario = load_model(path, Scenario, context={"base": path.parent})
    scenario.path = path
    load_team(scenario.team)
    if is_rule_file(scenario.model):
        load_model(Path(scenario.model), ScriptedModel)  # type: ignore[arg-type]
    return scenario


def scenario_paths(paths: Iterable[Path | str]) -> list[Path]:
    """Files as given; a directory stands for its ``*.yaml`` files (not its subdirectories)."""
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found.extend(sorted(p for p in item.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file()))
        else:
            found.append(item)
    if not found:
        raise ConfigError("no scenario files given")
    return found


def is_rule_file(model: str | None) -> bool:
    return model is not None and model.endswith(YAML_SUFFIXES)


# --------------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------------


class Check(BaseModel):
    """One expectation's verdict; `name` says which one (``tools_called[1] issue_refund``), `detail` why it failed."""

    name: str
    passed: bool
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}" if self.detail else self.name


class ToolCallRecord(BaseModel):
    """A tool call the team made, as its message reported it."""

    turn: int
    agent: str
    tool: str
    args: dict[str, Any]
    ok: bool

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"{self.tool}({args}){'' if self.ok else ' ERROR'}"


class IntentRecord(BaseModel):
    """The intent detected for one customer message and what decided it (``embedding``, ``context``, ``model``)."""

    turn: int
    intent: str
    decided_by: str
    score: float | None = None
    model_calls: int = 0


class TrialResult(BaseModel):
    """One trial of one scenario: verdict, the failing expectations, and what it took."""

    scenario: str
    trial: int
    status: Literal["pass", "fail", "error"]
    failures: list[str] = Field(default_factory=list, description="Each failing expectation, named, with why.")
    error: str | None = None
    checks: list[Check] = Field(default_factory=list)
    customer_turns: int = 0
    turns: int = 0
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    intents: list[IntentRecord] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    customer: list[str] = Field(default_factory=list)
    replies: list[str] = Field(default_factory=list)
    usage_by_agent: dict[str, Totals] = Field(default_factory=dict)
    session_id: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ScenarioResult(BaseModel):
    """All trials of one scenario."""

    name: str
    path: str
    trials: list[TrialResult]
    passes: int
    pass_hat_k: dict[str, float]


class SuiteResult(BaseModel):
    """A suite: every scenario's trials, pass^1..pass^n over scenarios, and the totals."""

    passed: bool
    scenarios: list[ScenarioResult]
    trials: int
    pass_hat_k: dict[str, float]
    cost_usd: float
    tokens: int
    duration_s: float


def pass_hat_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """pass^k over scenarios given (passes c, trials n) each: the mean of C(c,k)/C(n,k) (tau-bench's estimator)."""
    usable = [(c, n) for c, n in counts if n >= k]
    if not usable:
        return 0.0
    return sum(math.comb(c, k) / math.comb(n, k) for c, n in usable) / len(usable)


def _pass_table(counts: Sequence[tuple[int, int]], trials: int) -> dict[str, float]:
    return {str(k): round(pass_hat_k(counts, k), 6) for k in range(1, trials + 1)}


# --------------------------------------------------------------------------------------------------------------------
# Reading a conversation: tool calls, intents
# --------------------------------------------------------------------------------------------------------------------

_STEP_LINE = re.compile(r"^(?:Step \d+|Request): (?P<name>[A-Za-z0-9_-]{1,64})\(")
_ARROW = re.compile(r"\) -> ")


def tool_calls_in(message: BaseChatMessage, turn: int) -> list[ToolCallRecord]:
    """The tool calls a tool-running member reported: ``metadata["calls"]`` (JSON) when it gives them, else its
    result lines, ``Step 1: lookup_order(order_id='1042') -> {...}`` (an ``ERROR`` after the arrow: it failed)."""
    if message.metadata.get("kind") != "tool_result":
        return []
    given = message.metadata.get("calls")
    if given:
        return [
            ToolCallRecord(turn=turn, agent=message.source, tool=c["tool"], args=c.get("args", {}), ok=c["ok"])
            for c in json.loads(given)
        ]
    calls = []
    for line in message.to_text().splitlines():
        start = _STEP_LINE.match(line)
        if start is None:
            continue
        for arrow in _ARROW.finditer(line, start.end()):  # the first arrow after which the call parses
            args = _keyword_literals(line[start.end() : arrow.start()])
            if args is not None:
                ok = not line[arrow.end() :].startswith("ERROR")
                calls.append(ToolCallRecord(turn=turn, agent=message.source, tool=start["name"], args=args, ok=ok))
                break
    return calls


def _keyword_literals(text: str) -> dict[str, Any] | None:
    """``a='x', n=3`` (Python reprs of JSON values) as a dict, or None if it is not that."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        if not isinstance(call, ast.Call) or call.args:
            return None
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    except (SyntaxError, ValueError):
        return None


def intent_in(message: BaseChatMessage, turn: int) -> IntentRecord | None:
    """The intent an intent-detecting member reported in its metadata (``kind: intent``)."""
    meta = message.metadata
    if meta.get("kind") != "intent" or "intent" not in meta:
        return None
    score = meta.get("score")
    return IntentRecord(
        turn=turn,
        intent=meta["intent"],
        decided_by=meta.get("decided_by", "?"),
        score=float(score) if score else None,
        model_calls=int(meta.get("model_calls", "0") or 0),
    )


@dataclass
class Trace:
    """What happened in one trial, as the expectations read it."""

    customer: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    intents: list[IntentRecord] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    results: list[RunResult] = field(default_factory=list)

    def observe(self, message: BaseChatMessage) -> None:
        turn = len(self.customer)
        self.tool_calls.extend(tool_calls_in(message, turn))
        intent = intent_in(message, turn)
        if intent is not None:
            self.intents.append(intent)

    @property
    def turns(self) -> int:
        return sum(len(result.decisions) for result in self.results)

    @property
    def cost_usd(self) -> float:
        return float(sum(result.usage.cost_usd for result in self.results))


# --------------------------------------------------------------------------------------------------------------------
# Checking the expectations
# --------------------------------------------------------------------------------------------------------------------


def _same(expected: Any, actual: Any) -> bool:
    """Equal, or the same scalar written differently (YAML ``1042`` against a tool's ``"1042"``)."""
    if expected == actual:
        return True
    scalars = (str, int, float)
    return isinstance(expected, scalars) and isinstance(actual, scalars) and str(expected) == str(actual)


def _matches(expectation: ToolExpectation, call: ToolCallRecord) -> bool:
    if call.tool != expectation.name or (expectation.ok is not None and call.ok != expectation.ok):
        return False
    return all(key in call.args and _same(value, call.args[key]) for key, value in expectation.args.items())


def evaluate(expect: Expectations, trace: Trace, database: Path | None) -> list[Check]:
    """Every expectation's verdict, in the order the file lists them."""
    checks: list[Check] = []
    made = "; ".join(c.describe() for c in trace.tool_calls) or "none"
    if expect.intent is not None:
        seen = [i.intent for i in trace.intents]
        wanted = expect.intent
        ok = seen == wanted if isinstance(wanted, list) else bool(seen) and seen[0] == wanted
        checks.append(Check(name="intent", passed=ok, detail="" if ok else f"expected {wanted!r}, detected {seen}"))
    for index, expected in enumerate(expect.tools_called):
        ok = any(_matches(expected, call) for call in trace.tool_calls)
        detail = "" if ok else f"no call {expected.describe()} (calls: {made})"
        checks.append(Check(name=f"tools_called[{index}] {expected.name}", passed=ok, detail=detail))
    for name in expect.tools_not_called:
        calls = [c.describe() for c in trace.tool_calls if c.tool == name]
        detail = f"called: {'; '.join(calls)}" if calls else ""
        checks.append(Check(name=f"tools_not_called {name}", passed=not calls, detail=detail))
    for query, rows in expect.database.items():
        checks.append(_database_check(database, query, rows))
    said = "\n".join(trace.replies).lower()
    for phrase in expect.reply_contains:
        ok = phrase.lower() in said
        detail = "" if ok else f"no reply says it (last reply: {(trace.replies or [''])[-1][:200]!r})"
        checks.append(Check(name=f"reply_contains {phrase!r}", passed=ok, detail=detail))
    for phrase in expect.reply_not_contains:
        ok = phrase.lower() not in said
        checks.append(Check(name=f"reply_not_contains {phrase!r}", passed=ok, detail="" if ok else "a reply says it"))
    if expect.max_turns is not None:
        ok = trace.turns <= expect.max_turns
        detail = "" if ok else f"{trace.turns} agent turns > {expect.max_turns}"
        checks.append(Check(name="max_turns", passed=ok, detail=detail))
    if expect.max_cost_usd is not None:
        ok = trace.cost_usd <= expect.max_cost_usd
        detail = "" if ok else f"${trace.cost_usd:.6f} > ${expect.max_cost_usd}"
        checks.append(Check(name="max_cost_usd", passed=ok, detail=detail))
    return checks


def _database_check(database: Path | None, query: str, expected: list[list[Any]]) -> Check:
    name = f"database {query}"
    if database is None:
        return Check(name=name, passed=False, detail="the scenario has no database")
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            rows = [list(row) for row in connection.execute(query).fetchall()]
    except sqlite3.Error as exc:
        return Check(name=name, passed=False, detail=f"query failed: {exc}")
    ok = len(rows) == len(expected) and all(
        len(a) == len(b) and all(map(_same, b, a)) for a, b in zip(rows, expected, strict=True)
    )
    return Check(name=name, passed=ok, detail="" if ok else f"expected {expected}, got {rows}")


# --------------------------------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """A scenario ready for its trials: its team, settings and knowledge scope."""

    scenario: Scenario
    spec: TeamSpec
    settings: Settings
    knowledge_scope: str | None


class ScenarioRunner:
    """Runs scenarios' trials (concurrently up to `concurrency`), each on a fresh team, database and memory scope.

    `model` overrides every scenario's model; `cassette` records or replays every model call; `memory` defaults to
    a temporary store removed afterwards (scenarios never touch the user's own memory); `on_trial` is called as each
    trial finishes (a progress bar).
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
    ) -> None:
        if trials < 1 or concurrency < 1:
            raise ValueError("trials and concurrency must be at least 1")
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

            jobs = [one(item, trial) for item in prepared for trial in range(1, self.trials + 1)]
            results = await asyncio.gather(*jobs)
        finally:
            await self._clean_up()
        return _summary(prepared, results, self.trials, time.perf_counter() - started)

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
        return _Prepared(scenario=scenario, spec=spec, settings=settings, knowledge_scope=scope)

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
        from huddle.teams.group_chat import GroupChatTeam

        scenario = item.scenario
        session = f"{scenario.name}-{trial}-{uuid.uuid4().hex[:6]}"
        assert self._workdir is not None
        folder = self._workdir / session
        folder.mkdir(parents=True)
        database = _fresh_database(folder / "database.sqlite", scenario.database)
        spec = self._trial_spec(item, self._scope("user", session), database)
        trace, error, team = Trace(), None, None
        started = time.perf_counter()
        self._scopes.append(f"session:{session}")
        scope = f"{scenario.name}#{trial}"
        try:
            team = GroupChatTeam(
                spec,
                item.settings,
                ledger=self.ledger,
                memory=self.memory,
                session_id=session,
                workspace=folder / "workspace",
                wrap_client=self.cassette.wrap if self.cassette is not None else None,
            )
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

    async def _converse(self, item: _Prepared, team: GroupChatTeam, trace: Trace, session: str, scope: str) -> None:
        """The customer's turns, each one run of the team; stops early when a cassette missed."""
        from autogen_agentchat.messages import BaseChatMessage

        from huddle.teams.group_chat import RunResult

        customer = _Customer(item, self, session) if item.scenario.simulator is not None else None
        scripted = list(item.scenario.user or [])
        reply: str | None = None
        while True:
            message = await customer.next(reply) if customer is not None else (scripted.pop(0) if scripted else None)
            if message is None:
                return
            trace.customer.append(message)
            async for event in team.run_stream(message):
                if isinstance(event, RunResult):
                    trace.results.append(event)
                    reply = event.answer
                    trace.replies.append(reply)
                elif isinstance(event, BaseChatMessage) and event.source != "user":
                    trace.observe(event)
            if self.cassette is not None and self.cassette.misses_in(scope):
                return

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


def _summary(
    prepared: Sequence[_Prepared], results: Sequence[TrialResult], trials: int, duration: float
) -> SuiteResult:
    scenarios = []
    for item in prepared:
        mine = [r for r in results if r.scenario == item.scenario.name]
        passes = sum(r.passed for r in mine)
        scenarios.append(
            ScenarioResult(
                name=item.scenario.name,
                path=str(item.scenario.path or ""),
                trials=mine,
                passes=passes,
                pass_hat_k=_pass_table([(passes, len(mine))], trials),
            )
        )
    counts = [(s.passes, len(s.trials)) for s in scenarios]
    return SuiteResult(
        passed=all(r.passed for r in results),
        scenarios=scenarios,
        trials=trials,
        pass_hat_k=_pass_table(counts, trials),
        cost_usd=round(sum(r.cost_usd for r in results), 8),
        tokens=sum(r.tokens for r in results),
        duration_s=round(duration, 3),
    )


# --------------------------------------------------------------------------------------------------------------------
# The API
# --------------------------------------------------------------------------------------------------------------------


def load_scenarios(paths: Iterable[Path | str]) -> list[Scenario]:
    """Every scenario file (directories: their ``*.yaml``), checked before anything runs; names must be unique."""
    scenarios = [load_scenario(path) for path in scenario_paths(paths)]
    names = [s.name for s in scenarios]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"scenario names must be unique; repeated: {', '.join(repeated)}")
    return scenarios


async def run_async(
    paths: Iterable[Path | str] | Sequence[Scenario],
    *,
    trials: int = 1,
    concurrency: int = 1,
    settings: Settings | None = None,
    model: str | None = None,
    record: Path | str | None = None,
    replay: Path | str | None = None,
    ledger: UsageLedger | None = None,
    on_trial: Callable[[TrialResult], None] | None = None,
) -> SuiteResult:
    """`run` for code that already has an event loop."""
    from huddle.config.settings import load_settings
    from huddle.evals.cassette import Cassette

    if record is not None and replay is not None:
        raise ConfigError("give --record or --replay, not both")
    items = list(paths)
    given = [item for item in items if isinstance(item, Scenario)]
    scenarios = given if given and len(given) == len(items) else load_scenarios(items)  # type: ignore[arg-type]
    cassette = Cassette.record(Path(record)) if record else Cassette.replay(Path(replay)) if replay else None
    runner = ScenarioRunner(
        settings or load_settings(),
        trials=trials,
        concurrency=concurrency,
        model=model,
        cassette=cassette,
        ledger=ledger,
        on_trial=on_trial,
    )
    try:
        return await runner.run(scenarios)
    finally:
        if cassette is not None:
            cassette.save()


def run(paths: Iterable[Path | str] | Sequence[Scenario], **options: Any) -> SuiteResult:
    """Run scenario files (or `Scenario` objects) and return the suite's result; usable from pytest::

        result = huddle.evals.scenarios.run(["examples/support"], trials=3)
        assert result.passed, [t.failures for s in result.scenarios for t in s.trials]

    Options: `trials`, `concurrency`, `settings` (default: `load_settings()`), `model` (a profile or rule file for
    every scenario), `record`/`replay` (a cassette path), `ledger`, `on_trial`. Invalid files raise `ConfigError`.
    """
    return asyncio.run(run_async(paths, **options))


def junit_xml(suite: SuiteResult) -> str:
    """The suite as JUnit XML: one test suite per scenario, one test case per trial, failures named."""
    root = ElementTree.Element("testsuites", name="huddle scenarios", time=f"{suite.duration_s:.3f}")
    for scenario in suite.scenarios:
        failures = sum(t.status == "fail" for t in scenario.trials)
        errors = sum(t.status == "error" for t in scenario.trials)
        node = ElementTree.SubElement(
            root,
            "testsuite",
            name=scenario.name,
            tests=str(len(scenario.trials)),
            failures=str(failures),
            errors=str(errors),
            time=f"{sum(t.latency_s for t in scenario.trials):.3f}",
        )
        for trial in scenario.trials:
            case = ElementTree.SubElement(
                node, "testcase", classname=scenario.name, name=f"trial {trial.trial}", time=f"{trial.latency_s:.3f}"
            )
            if trial.status == "error":
                ElementTree.SubElement(case, "error", message=trial.error or "error").text = trial.error
            elif trial.status == "fail":
                ElementTree.SubElement(case, "failure", message=trial.failures[0]).text = "\n".join(trial.failures)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True)


def counts(suite: SuiteResult) -> Mapping[str, int]:
    """Trials per status across the suite."""
    statuses = [t.status for s in suite.scenarios for t in s.trials]
    return {status: statuses.count(status) for status in ("pass", "fail", "error")}
