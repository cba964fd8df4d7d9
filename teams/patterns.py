"""What the sequential, parallel, hierarchical and event-driven teams share: members, a run in progress, the result.

Every kind is a `PatternTeam`: built from a `PatternSpec` like a `GroupChatTeam` from a `TeamSpec` (same keyword
arguments, same ledger, budget governor and client wrapper), run with the same ``run`` / ``run_stream`` and returning
the same `RunResult` shape, so ``huddle run --json``, durable sessions and a parent team treat all kinds alike.
`build_team` makes the right kind from any spec; that is how a team becomes a member of another.

The orchestration is plain asyncio rather than autogen's GraphFlow or its agent runtime, for three reasons: members
may be whole teams (GraphFlow takes only ``ChatAgent`` s); GraphFlow broadcasts every message to every node, while a
pipeline must hand each member exactly the previous output; and a run's shape here (a loop, a ``gather``, a topic
table) is a few lines whose timing, failures and cost we control and measure (``bench/overhead.py``). Model calls
still go through autogen ``ChatCompletionClient`` s built by `build_client`, so every call is metered, budgeted,
retried and cached like everywhere else, and custom members are autogen ``ChatAgent`` s.

A member's failure never escapes as an exception: it becomes a `MemberError` that each kind turns into a partial
result naming the member (``failures`` in the result, a reason in ``stop_reason``).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from autogen_agentchat.base import ChatAgent
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core import CancellationToken
from autogen_core.models import CreateResult, SystemMessage, UserMessage
from pydantic import BaseModel, Field

from huddle import tracing
from huddle.agents.state import RunState
from huddle.config.settings import Settings
from huddle.errors import ConfigError
from huddle.models.factory import ClientWrapper, build_client
from huddle.models.metering import MeteredClient
from huddle.secrets import redact
from huddle.teams.group_chat import GroupChatTeam, MessageRecord, RunResult, UsageSummary
from huddle.teams.kinds import MemberSpec, PatternSpec, load_any_team
from huddle.teams.managed_chat import Event
from huddle.teams.spec import TeamSpec
from huddle.tools.plugins import load_agent
from huddle.usage import UsageLedger, usage_scope
from huddle.usage.budget import BudgetExhausted, Governor

if TYPE_CHECKING:
    from huddle.memory.store import VectorMemory

_PLACEHOLDER = re.compile(r"\{(input|task|topic)\}")
_REASON_CHARS = 300
T = TypeVar("T")


class AnyTeam(Protocol):
    """What callers (the CLI, durable sessions, a parent team) use of a team, whatever its kind."""

    @property
    def spec(self) -> TeamSpec | PatternSpec: ...

    @property
    def responder(self) -> str:
        """The source of the messages that carry the run's answer."""
        ...

    state: RunState
    governor: Governor

    def run_stream(
        self,
        task: str,
        *,
        run_id: str | None = None,
        cancellation_token: CancellationToken | None = None,
        stream_answer: bool = True,
    ) -> AsyncIterator[Event | RunResult]: ...

    async def run(self, task: str, **kwargs: Any) -> RunResult: ...

    async def save_state(self) -> dict[str, Any]: ...

    async def load_state(self, state: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


class PatternDecision(BaseModel):
    """Why a member ran: the turn, the member, the kind's policy (sequence, fan_out, aggregate, delegate, integrate,
    event, stop; a nested group chat's manager policies keep their names) and a short reason."""

    turn: int
    speaker: str
    policy: str
    reason: str


class PatternResult(RunResult):
    """A `RunResult` plus the team's kind and the members that failed (member -> reason)."""

    kind: str
    decisions: list[PatternDecision]  # type: ignore[assignment]  # the kinds' own policies, not only the manager's
    failures: dict[str, str] = Field(default_factory=dict)


class MemberError(Exception):
    """A member failed (raised, timed out, or ran out of budget); `reason` is safe to show (secrets masked)."""

    def __init__(self, member: str, reason: str, *, budget: bool = False) -> None:
        super().__init__(f"{member} failed: {reason}")
        self.member, self.reason, self.budget = member, reason, budget


@dataclass
class Outcome:
    """How a kind's orchestration ended: the answer and why it stopped."""

    answer: str
    stop_reason: str


@dataclass
class Run:
    """One run in progress: where members post their messages and the kind its decisions and failures."""

    team: PatternTeam
    task: str
    run_id: str
    token: CancellationToken
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    messages: list[BaseChatMessage] = field(default_factory=list)
    decisions: list[PatternDecision] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    def emit(self, item: Event) -> None:
        """Stream `item` to the caller; chat messages also go into the result."""
        if isinstance(item, BaseChatMessage):
            self.messages.append(item)
        self.queue.put_nowait(item)

    def decide(self, speaker: str, policy: str, reason: str) -> None:
        """Record why `speaker` runs (in the result and, beside the run's calls, in the ledger)."""
        decision = PatternDecision(turn=len(self.decisions) + 1, speaker=speaker, policy=policy, reason=reason)
        self.decisions.append(decision)
        self.team.ledger.record_decision(decision.turn, speaker, policy, reason)
        tracing.event(f"decision {speaker}", "decision", **decision.model_dump())

    def fail(self, error: MemberError) -> None:
        self.failures[error.member] = error.reason

    def absorb(self, member: str, result: RunResult) -> None:
        """Keep a nested team's decisions and failures, named after the member that ran it."""
        for decision in result.decisions:
            self.decisions.append(
                PatternDecision(
                    turn=len(self.decisions) + 1,
                    speaker=f"{member}/{decision.speaker}",
                    policy=decision.policy,
                    reason=decision.reason,
                )
            )
        for name, reason in getattr(result, "failures", {}).items():
            self.failures[f"{member}/{name}"] = reason


def render_input(template: str, *, input: str, task: str, topic: str = "") -> str:
    """Fill ``{input}``, ``{task}`` and ``{topic}``; any other braces in the text are left as they are."""
    values = {"input": input, "task": task, "topic": topic}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


class Member(ABC):
    """A member as a callable: text in, text out, its messages posted to the run; failures as `MemberError`."""

    def __init__(self, spec: MemberSpec, timeout_s: float | None) -> None:
        self.spec = spec
        self.name = spec.name
        self.timeout_s = timeout_s

    async def __call__(self, text: str, run: Run, *, topic: str = "") -> str:
        """Run on `text` (through the member's ``input`` template) within its timeout."""
        prompt = render_input(self.spec.input, input=text, task=run.task, topic=topic)
        with tracing.span(f"agent {self.name}", "agent", agent=self.name, topic=topic or None):
            return await self.guard(self.run(prompt, run, topic))

    async def guard(self, work: Awaitable[T]) -> T:
        """Await `work` within the member's timeout; any failure comes out as a `MemberError` naming the member."""
        try:
            return await asyncio.wait_for(work, self.timeout_s)  # not asyncio.timeout: Python 3.10 is supported
        except MemberError:
            raise
        except asyncio.TimeoutError as exc:  # TimeoutError itself only from Python 3.11
            raise MemberError(self.name, f"timed out after {self.timeout_s:g} s") from exc
        except BudgetExhausted as exc:
            raise MemberError(self.name, redact(str(exc))[:_REASON_CHARS], budget=True) from exc
        except Exception as exc:
            raise MemberError(self.name, redact(f"{type(exc).__name__}: {exc}")[:_REASON_CHARS]) from exc

    @abstractmethod
    async def run(self, prompt: str, run: Run, topic: str) -> str:
        """The member's work on the rendered prompt; post messages with ``run.emit``."""

    def message(self, content: str, topic: str, **kwargs: Any) -> TextMessage:
        """The member's output as a chat message (with the event topic it answered, if any)."""
        return TextMessage(content=content, source=self.name, metadata={"topic": topic} if topic else {}, **kwargs)

    @abstractmethod
    async def save_state(self) -> Mapping[str, Any] | None:
        """What a durable session keeps of this member (None: nothing, it is stateless)."""

    @abstractmethod
    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what `save_state` returned."""

    @abstractmethod
    async def close(self) -> None:
        """Release what the member holds."""


class ModelMember(Member):
    """A model agent: its instruction as the system prompt, the input as the user message, one metered call.

    Stateless, so concurrent calls (two events at once, several sub-tasks) need no lock.
    """

    def __init__(self, spec: MemberSpec, timeout_s: float | None, client: MeteredClient) -> None:
        super().__init__(spec, timeout_s)
        self.client = client
        self.instruction = spec.instruction or f"You are {spec.name}: {spec.description}"

    async def run(self, prompt: str, run: Run, topic: str) -> str:
        result = await self.complete(self.instruction, prompt, run)
        text = reply_text(result)
        run.emit(self.message(text, topic, models_usage=result.usage))
        return text

    async def complete(self, system: str, user: str, run: Run, **create_args: Any) -> CreateResult:
        """One call with this member's client (the hierarchical manager also asks for structured output)."""
        return await self.client.create(
            [SystemMessage(content=system), UserMessage(content=user, source="user")],
            cancellation_token=run.token,
            **create_args,
        )

    async def save_state(self) -> None:
        return None  # one call per input, no history

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore."""

    async def close(self) -> None:
        """Its client belongs to the team, which closes it."""


class TeamMember(Member):
    """A whole team as a member: its intermediate messages are passed on named ``member/agent``, its answer is the
    member's output. A team keeps a conversation, so it works on one input at a time."""

    def __init__(self, spec: MemberSpec, timeout_s: float | None, team: AnyTeam) -> None:
        super().__init__(spec, timeout_s)
        self.team = team
        self._lock = asyncio.Lock()

    async def run(self, prompt: str, run: Run, topic: str) -> str:
        async with self._lock:
            result: RunResult | None = None
            # aclosing: a timeout or a stop event ends the nested run now, not when the generator is collected.
            # Only whole messages are passed on, so the nested team need not stream its answer.
            stream = self.team.run_stream(prompt, run_id=run.run_id, cancellation_token=run.token, stream_answer=False)
            async with aclosing(stream):  # type: ignore[type-var]  # an async generator, typed as AsyncIterator
                async for item in stream:
                    if isinstance(item, RunResult):
                        result = item
                    elif isinstance(item, BaseChatMessage) and item.source not in ("user", self.team.responder):
                        run.emit(item.model_copy(update={"source": f"{self.name}/{item.source}"}))
        if result is None:
            raise RuntimeError("the team ended without a result")
        run.absorb(self.name, result)
        if not result.answer:
            raise MemberError(self.name, f"no answer ({result.stop_reason})"[:_REASON_CHARS])
        run.emit(self.message(result.answer, topic))
        return result.answer

    async def save_state(self) -> Mapping[str, Any]:
        return await self.team.save_state()

    async def load_state(self, state: Mapping[str, Any]) -> None:
        await self.team.load_state(dict(state))

    async def close(self) -> None:
        await self.team.close()


class AgentMember(Member):
    """A custom autogen ``ChatAgent`` (``use:``): sent the input as a user message; one input at a time."""

    def __init__(self, spec: MemberSpec, timeout_s: float | None, agent: ChatAgent) -> None:
        super().__init__(spec, timeout_s)
        self.agent = agent
        self._lock = asyncio.Lock()

    async def run(self, prompt: str, run: Run, topic: str) -> str:
        async with self._lock:
            response = await self.agent.on_messages([TextMessage(content=prompt, source="user")], run.token)
        for inner in response.inner_messages or ():
            if isinstance(inner, BaseChatMessage):
                run.emit(inner)
        text = response.chat_message.to_text()
        run.emit(self.message(text, topic, models_usage=response.chat_message.models_usage))
        return text

    async def save_state(self) -> Mapping[str, Any]:
        return await self.agent.save_state()

    async def load_state(self, state: Mapping[str, Any]) -> None:
        await self.agent.load_state(state)

    async def close(self) -> None:
        await self.agent.close()


@dataclass
class MemberContext:
    """What a custom agent with a ``bind(context)`` method receives (the group chat's `TeamContext`, for patterns):
    the team, its own name, and a factory for a metered model client in that name."""

    team: PatternTeam
    name: str
    client: Callable[[], MeteredClient]


class PatternTeam(ABC):
    """Members built from a spec, run with `run` or `run_stream`; each kind implements `orchestrate`."""

    kind: ClassVar[str]

    def __init__(
        self,
        spec: PatternSpec,
        settings: Settings,
        *,
        ledger: UsageLedger | None = None,
        memory: VectorMemory | None = None,
        session_id: str | None = None,
        workspace: Path | None = None,
        wrap_client: ClientWrapper | None = None,
    ) -> None:
        """The same arguments as `GroupChatTeam`; nested teams get the same ledger, memory, session and wrapper."""
        if spec.team.kind != self.kind:
            raise ConfigError(f"team {spec.team.name!r} is kind {spec.team.kind!r}, not {self.kind!r}")
        self.spec = spec
        self.settings = settings
        self.ledger = ledger or UsageLedger()
        self.session_id = session_id
        self.workspace = workspace or settings.workspace_dir
        self.state = RunState(session_scope=f"session:{session_id}" if session_id else None)
        self.governor = Governor(settings.budget, self.ledger, final_agent=self.responder)
        self._wrap_client = wrap_client
        self._memory = memory
        if self._memory is None and any(needs_memory(m.team) for m in spec.members() if m.team is not None):
            from huddle.memory.store import VectorMemory

            self._memory = VectorMemory.from_settings(settings)  # opened once, shared by every nested team
        self._clients: list[MeteredClient] = []
        self.members: dict[str, Member] = {m.name: self.build_member(m) for m in spec.agents}

    @property
    @abstractmethod
    def responder(self) -> str:
        """The source of the message that carries the answer (what ``huddle run`` shows as the answer)."""

    @abstractmethod
    async def orchestrate(self, run: Run) -> Outcome:
        """Run the members on ``run.task`` the way this kind does; never raise for a member's failure."""

    def timeout_for(self, spec: MemberSpec) -> float | None:
        return spec.timeout_s or self.spec.team.member_timeout_s

    def client_for(self, spec: MemberSpec) -> MeteredClient:
        """A metered client in the member's name; the profile chosen as the group chat chooses it."""
        choice = spec.model or self.settings.model or self.spec.team.model
        client = build_client(
            self.settings.profile(choice),
            self.ledger,
            agent=spec.name,
            governor=self.governor,
            profiles=self.settings.profiles,
            cache_dir=self.settings.cache_dir,
            wrap=self._wrap_client,
        )
        self._clients.append(client)
        return client

    def build_member(self, spec: MemberSpec) -> Member:
        timeout = self.timeout_for(spec)
        if spec.team is not None:
            nested = load_any_team(spec.team) if isinstance(spec.team, str) else spec.team
            team = build_team(
                nested,
                self.settings,
                ledger=self.ledger,
                memory=self._memory,
                session_id=self.session_id,
                workspace=self.workspace,
                wrap_client=self._wrap_client,
            )
            return TeamMember(spec, timeout, team)
        if spec.use is not None:
            agent = load_agent(spec.use, spec.config, where=f"team {self.spec.team.name!r}: {spec.name}.use")
            bind = getattr(agent, "bind", None)
            if callable(bind):
                bind(MemberContext(team=self, name=spec.name, client=lambda: self.client_for(spec)))
            if not isinstance(agent, ChatAgent):
                raise ConfigError(
                    f"team {self.spec.team.name!r}: {spec.name}.use: {spec.use!r} is not an autogen ChatAgent "
                    "(tool agents need a planner: put them in a `kind: group_chat` team and nest that)"
                )
            return AgentMember(spec, timeout, agent)
        return ModelMember(spec, timeout, self.client_for(spec))

    async def attempt(self, member: Member, text: str, run: Run, *, topic: str = "") -> str | None:
        """The member's output, or None after recording its failure."""
        try:
            return await member(text, run, topic=topic)
        except MemberError as error:
            run.fail(error)
            return None

    async def run_stream(
        self,
        task: str,
        *,
        run_id: str | None = None,
        cancellation_token: CancellationToken | None = None,
        stream_answer: bool = True,
    ) -> AsyncIterator[Event | RunResult]:
        """Yield the task, every member's message as it is posted, then the `PatternResult`. Members post whole
        messages, so `stream_answer` (there for the shared team interface) changes nothing here."""
        run_id = run_id or uuid.uuid4().hex[:12]
        self.state.start(task, run_id)
        self.governor.start_run()
        run = Run(self, task, run_id, cancellation_token or CancellationToken())
        info = {"team": self.spec.team.name, "team_kind": self.kind, "session_id": self.session_id, "task": task[:300]}
        with (
            usage_scope(run_id=run_id, session_id=self.session_id),
            tracing.trace_run(self.settings.runs_dir, run_id, **info) as root,
        ):
            run.emit(TextMessage(content=task, source="user"))
            worker = asyncio.create_task(self.orchestrate(run))  # copies the usage scope into the members' calls
            worker.add_done_callback(lambda _: run.queue.put_nowait(None))
            try:
                while (item := await run.queue.get()) is not None:
                    yield item
                outcome = worker.result()
            finally:
                if not worker.done():  # the caller stopped listening: stop the members too
                    worker.cancel()
                    with suppress(asyncio.CancelledError):
                        await worker
            result = self.result(run, outcome)
            root.set(
                stop_reason=result.stop_reason,
                answer=result.answer[:300],
                failed=", ".join(result.failures) or None,
                calls=result.usage.calls,
                prompt_tokens=result.usage.prompt_tokens,
                completion_tokens=result.usage.completion_tokens,
                cost_usd=result.usage.cost_usd,
            )
            yield result

    async def run(self, task: str, **kwargs: Any) -> PatternResult:
        """Run one task to the end and return its result."""
        result: PatternResult | None = None
        async for item in self.run_stream(task, **kwargs):
            if isinstance(item, PatternResult):
                result = item
        assert result is not None  # run_stream always ends with a result
        return result

    def result(self, run: Run, outcome: Outcome) -> PatternResult:
        return PatternResult(
            run_id=run.run_id,
            session_id=self.session_id,
            team=self.spec.team.name,
            kind=self.kind,
            answer=outcome.answer,
            stop_reason=outcome.stop_reason,
            messages=[_record(m) for m in run.messages],
            usage=UsageSummary(
                **self.ledger.totals(run_id=run.run_id).model_dump(),
                by_agent=self.ledger.by("agent", run_id=run.run_id),
                by_model=self.ledger.by("model", run_id=run.run_id),
            ),
            decisions=run.decisions,
            failures=run.failures,
            budget=self.governor.report() if self.settings.budget.active else None,
        )

    def all_members(self) -> list[Member]:
        """Every member object, including a kind's extra ones (aggregator, manager)."""
        return list(self.members.values())

    async def save_state(self) -> dict[str, Any]:
        """The members' states (nested teams' conversations, custom agents'), for a durable session."""
        states = {m.name: await m.save_state() for m in self.all_members()}
        return {"members": {name: dict(state) for name, state in states.items() if state is not None}}

    async def load_state(self, state: dict[str, Any]) -> None:
        saved = state.get("members", {})
        for member in self.all_members():
            if member.name in saved:
                await member.load_state(saved[member.name])

    async def close(self) -> None:
        for member in self.all_members():
            await member.close()
        for client in self._clients:
            await client.close()


def failure_note(failures: Mapping[str, str]) -> str:
    """``2 members failed: a (reason); b (reason)`` for a stop reason, or "" when none did."""
    if not failures:
        return ""
    listed = "; ".join(f"{name} ({reason})" for name, reason in failures.items())
    return f"{len(failures)} member{'s' if len(failures) > 1 else ''} failed: {listed}"


def needs_memory(spec: str | TeamSpec | PatternSpec) -> bool:
    """Whether a (nested) team has a memory member, so the shared vector memory must be opened for it."""
    if isinstance(spec, str):
        spec = load_any_team(spec)
    if isinstance(spec, TeamSpec):
        return spec.member("memory") is not None
    return any(needs_memory(m.team) for m in spec.members() if m.team is not None)


def build_team(spec: TeamSpec | PatternSpec | str | Path, settings: Settings, **kwargs: Any) -> AnyTeam:
    """A team of the spec's kind (a preset name or a YAML path is loaded first); `kwargs` as for `GroupChatTeam`."""
    if isinstance(spec, str | Path):
        spec = load_any_team(spec)
    if isinstance(spec, TeamSpec):
        return GroupChatTeam(spec, settings, **kwargs)
    # Imported here: each kind subclasses PatternTeam, defined above.
    from huddle.teams.event_driven import EventDrivenTeam
    from huddle.teams.hierarchical import HierarchicalTeam
    from huddle.teams.parallel import ParallelTeam
    from huddle.teams.sequential import SequentialTeam

    kinds: dict[str, type[PatternTeam]] = {
        cls.kind: cls for cls in (SequentialTeam, ParallelTeam, HierarchicalTeam, EventDrivenTeam)
    }
    return kinds[spec.team.kind](spec, settings, **kwargs)


def reply_text(result: CreateResult) -> str:
    """A reply's text (a tool-call reply, which a plain member never asks for, is shown as its calls)."""
    return result.content if isinstance(result.content, str) else "; ".join(str(c) for c in result.content)


def _record(message: BaseChatMessage) -> MessageRecord:
    usage = message.models_usage
    return MessageRecord(
        source=message.source,
        type=type(message).__name__,
        content=message.to_text(),
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
    )
