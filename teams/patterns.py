"""What the sequential, parallel, hierarchical and event-driven teams share: their members.

Every kind is a `PatternTeam`, a `Team` (`huddle.teams.base`: the run loop, the client factory, the `RunResult`) built
from a `PatternSpec` whose members are callables here: text in, text out. `build_team` makes the right kind from any
spec; that is how a team becomes a member of another.

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
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping
from contextlib import aclosing
from typing import Any, TypeVar

from autogen_agentchat.base import ChatAgent
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core.models import CreateResult, SystemMessage, UserMessage

from huddle import tracing
from huddle.agents.approval import AWAITING, ApprovalDecision, PendingCall
from huddle.agents.guard import failure_reason
from huddle.errors import ConfigError
from huddle.models.metering import MeteredClient
from huddle.secrets import redact
from huddle.teams.base import MemberError, Outcome, Run, RunResult, Team, build_team
from huddle.teams.kinds import MemberSpec, PatternSpec, load_any_team
from huddle.teams.spec import TeamSpec
from huddle.tools.plugins import load_agent
from huddle.usage.budget import BudgetExhausted

_PLACEHOLDER = re.compile(r"\{(input|task|topic)\}")
_REASON_CHARS = 300
T = TypeVar("T")


def render_input(template: str, *, input: str, task: str, topic: str = "") -> str:
    """Fill ``{input}``, ``{task}`` and ``{topic}``; any other braces in the text are left as they are."""
    values = {"input": input, "task": task, "topic": topic}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


class MemberPaused(Exception):
    """A nested team's run paused for approvals: its pending calls go up to the team that runs it."""

    def __init__(self, member: str, pending: list[PendingCall]) -> None:
        super().__init__(f"{member} waits for approval of {len(pending)} call(s)")
        self.member, self.pending = member, pending


class Member(ABC):
    """A member as a callable: text in, text out, its messages posted to the run; failures as `MemberError`."""

    def __init__(self, spec: MemberSpec, timeout_s: float | None) -> None:
        self.spec = spec
        self.name = spec.name
        self.timeout_s = timeout_s

    async def __call__(self, text: str, run: Run, *, topic: str = "") -> str:
        """Run on `text` (through the member's ``input`` template) within its timeout."""
        prompt = render_input(self.spec.input, input=text, task=run.task, topic=topic)
        with tracing.span(tracing.span_name("agent", self.name), "agent", agent=self.name, topic=topic or None):
            return await self.guard(self.run(prompt, run, topic))

    async def guard(self, work: Awaitable[T]) -> T:
        """Await `work` within the member's timeout; any failure comes out as a `MemberError` naming the member."""
        try:
            return await asyncio.wait_for(work, self.timeout_s)  # not asyncio.timeout: Python 3.10 is supported
        except (MemberError, MemberPaused):
            raise
        except asyncio.TimeoutError as exc:  # TimeoutError itself only from Python 3.11
            # Without a timeout of ours the member's own work timed out (an HTTP read, a tool): say what it said.
            reason = f"timed out after {self.timeout_s:g} s" if self.timeout_s is not None else failure_reason(exc)
            raise MemberError(self.name, reason) from exc
        except BudgetExhausted as exc:
            raise MemberError(self.name, redact(str(exc))[:_REASON_CHARS], budget=True) from exc
        except Exception as exc:
            raise MemberError(self.name, failure_reason(exc)) from exc

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

    def __init__(self, spec: MemberSpec, timeout_s: float | None, team: Team) -> None:
        super().__init__(spec, timeout_s)
        self.team = team
        self.resuming: dict[str, ApprovalDecision] | None = None  # set by the outer team: go on with these
        self._lock = asyncio.Lock()

    async def run(self, prompt: str, run: Run, topic: str) -> str:
        async with self._lock:
            result: RunResult | None = None
            # aclosing: a timeout or a stop event ends the nested run now, not when the generator is collected.
            # Only whole messages are passed on, so the nested team need not stream its answer.
            decisions, self.resuming = self.resuming, None
            stream = (
                self.team.run_stream(prompt, run_id=run.run_id, cancellation_token=run.token, stream_answer=False)
                if decisions is None
                else self.team.resume_stream(decisions, run_id=run.run_id, stream_answer=False)
            )
            async with aclosing(stream):
                async for item in stream:
                    if isinstance(item, RunResult):
                        result = item
                    elif isinstance(item, BaseChatMessage) and item.source not in ("user", self.team.responder):
                        run.emit(item.model_copy(update={"source": f"{self.name}/{item.source}"}))
        if result is None:
            raise RuntimeError("the team ended without a result")
        run.absorb(self.name, result)
        if result.stop_reason == AWAITING and result.pending:
            raise MemberPaused(self.name, list(self.team.state.pending))
        if not result.answer:  # its stop reason starts "error:" (`Team.settle`)
            budget = self.team.governor.stopped is not None
            raise MemberError(self.name, result.stop_reason[:_REASON_CHARS], budget=budget)
        run.emit(self.message(result.answer, topic))
        return result.answer

    async def save_state(self) -> Mapping[str, Any]:
        """The team's state, and its run's while that waits for approvals (so another process can take it up)."""
        state = await self.team.save_state()
        return {**state, "run_state": self.team.state.snapshot()} if self.team.state.pending else state

    async def load_state(self, state: Mapping[str, Any]) -> None:
        await self.team.load_state(dict(state))
        if "run_state" in state:
            self.team.state.restore(state["run_state"])

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


class PatternTeam(Team):
    """Members built from a `PatternSpec`; each kind implements `flow`, how they work on the task.

    Every kind takes up a nested team that paused for approvals in place: the nested team's pending calls become this
    team's (their `path` names the member), this run pauses too, and `progress` keeps the members' outputs so far
    (a kind may keep more: the delegation, the event backlog); when every call is decided the flow runs again, the
    finished members' outputs are reused (not redone) and the paused member goes on from where it stopped."""

    spec: PatternSpec

    def __init__(self, spec: PatternSpec, *args: Any, **kwargs: Any) -> None:
        """The arguments of `Team`; nested teams get the same ledger, memory, session, client wrapper and governor."""
        if spec.team.kind != self.kind:
            raise ConfigError(f"team {spec.team.name!r} is kind {spec.team.kind!r}, not {self.kind!r}")
        super().__init__(spec, *args, **kwargs)
        if any(needs_memory(m.team) for m in spec.members() if m.team is not None):
            self._memory = self.memory  # opened once, shared by every nested team
        self.progress: dict[str, str | None] = {}  # this run's member -> output (None: failed), kept while paused
        self.members: dict[str, Member] = {m.name: self.build_member(m) for m in spec.agents}

    async def orchestrate(self, run: Run) -> Outcome:
        run.emit(TextMessage(content=run.task, source="user"))
        self.progress = {}
        return await self.flow(run)

    async def proceed(self, run: Run, decisions: dict[str, ApprovalDecision]) -> Outcome:
        """Give each paused member its calls' decisions and run the flow again (see the class docstring)."""
        run.failures.update(self.state.failures)
        members = {m.name: m for m in self.all_members()}
        for name in {p.path[0] for p in self.state.pending}:
            member = members[name]
            assert isinstance(member, TeamMember)
            member.resuming = {p.id: decisions[p.id] for p in self.state.pending if p.path[0] == name}
        return await self.flow(run)

    def check_decisions(self, decisions: dict[str, ApprovalDecision]) -> None:
        """Also each nested team's own checks (an edit's arguments against its tool) on its calls."""
        super().check_decisions(decisions)
        for member in self.all_members():
            mine = {
                p.id: decisions[p.id] for p in self.state.pending if p.path[:1] == [member.name] and p.id in decisions
            }
            if mine and isinstance(member, TeamMember):
                member.team.check_decisions(mine)

    def paused(self, run: Run) -> Outcome | None:
        """The outcome of a flow some member of which paused for approvals (its failures kept for the resume)."""
        if not self.state.pending:
            return None
        self.state.failures.update(run.failures)
        return Outcome("", AWAITING)

    async def call(self, member: Member, text: str, run: Run, *, topic: str = "") -> str:
        """`member`'s output for `text`, keeping this team's pending calls: a nested team that answers (or fails)
        settles its calls, one that pauses replaces them with the ones it waits for now (`MemberPaused` raised)."""
        try:
            output = await member(text, run, topic=topic)
        except MemberPaused as paused:
            asked = [p.model_copy(update={"path": [member.name, *p.path]}) for p in paused.pending]
            self.state.pending = self._others(member) + asked
            raise
        except MemberError:
            self.state.pending = self._others(member)
            raise
        self.state.pending = self._others(member)
        return output

    def _others(self, member: Member) -> list[PendingCall]:
        """The pending calls of every member but `member`, read when it ends (other members run concurrently)."""
        return [p for p in self.state.pending if p.path[:1] != [member.name]]

    @abstractmethod
    async def flow(self, run: Run) -> Outcome:
        """Run the members on ``run.task`` the way this kind does; never raise for a member's failure."""

    def timeout_for(self, spec: MemberSpec) -> float | None:
        return spec.timeout_s or self.spec.team.member_timeout_s

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
                governor=self.governor,
            )
            return TeamMember(spec, timeout, team)
        if spec.use is not None:
            agent = load_agent(spec.use, spec.config, where=f"team {self.spec.team.name!r}: {spec.name}.use")
            self.bind(agent, spec.name, spec.model)
            if not isinstance(agent, ChatAgent):
                raise ConfigError(
                    f"team {self.spec.team.name!r}: {spec.name}.use: {spec.use!r} is not an autogen ChatAgent "
                    "(tool agents need a planner: put them in a `kind: group_chat` team and nest that)"
                )
            return AgentMember(spec, timeout, agent)
        return ModelMember(spec, timeout, self.client(spec.name, spec.model))

    async def attempt(self, member: Member, text: str, run: Run, *, topic: str = "") -> str | None:
        """The member's output, or None after recording its failure (or, for a member that paused for approvals,
        its pending calls: see `call`)."""
        try:
            return await self.call(member, text, run, topic=topic)
        except MemberPaused:
            return None
        except MemberError as error:
            run.fail(error)
            return None

    def all_members(self) -> list[Member]:
        """Every member object, including a kind's extra ones (aggregator, manager)."""
        return list(self.members.values())

    async def save_state(self) -> dict[str, Any]:
        """The members' states (nested teams' conversations, custom agents'), for a durable session."""
        states = {m.name: await m.save_state() for m in self.all_members()}
        members = {name: dict(state) for name, state in states.items() if state is not None}
        return {"members": members, "progress": dict(self.progress)}

    async def load_state(self, state: dict[str, Any]) -> None:
        self.progress = dict(state.get("progress") or {})
        saved = state.get("members", {})
        for member in self.all_members():
            if member.name in saved:
                await member.load_state(saved[member.name])

    async def release(self) -> None:
        for member in self.all_members():
            await member.close()


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


def reply_text(result: CreateResult) -> str:
    """A reply's text (a tool-call reply, which a plain member never asks for, is shown as its calls)."""
    return result.content if isinstance(result.content, str) else "; ".join(str(c) for c in result.content)
