"""What every kind of team shares: the `Team` base, its run loop, the result, the context custom agents are bound to.

A group chat and the pattern kinds (sequential, parallel, hierarchical, event-driven, nested) differ only in
`Team.orchestrate`: how members are put to work on one task. Everything around it lives here once: the model client
factory (every client metered into the team's ledger and budgeted by its governor), the run loop, the `RunResult`
(its models in `huddle.teams.results`), the decisions and failures a run records, `async with`, and loading a team
of any kind (`Team.load`).

The run loop runs `orchestrate` in a task of its own behind a queue, and that task is where the run's usage scope
and trace are entered and left. So a caller that stops listening early (``async for e in team.run_stream(t): break``)
leaves nothing behind in its own context: its later model calls are not billed to the abandoned run, no context
variable is reset from another context ("Token ... created in a different Context"), and cancelling the task closes
the run's trace file.

One run at a time per team: a team keeps one conversation (a chat's history, its members' state), so a run started
while another is in progress raises `TeamBusyError` rather than interleaving two tasks in one conversation. Run
concurrent tasks on separate teams; they are cheap to build and can share one ledger and memory.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken

from huddle import effects, tracing
from huddle.agents.approval import (
    AWAITING,
    DEFAULT_TIMEOUT_S,
    ApprovalDecision,
    ApprovalHook,
    Checkpoint,
    check_decisions,
    checkpoint,
    checkpointing,
    reply_decider,
    settled,
)
from huddle.agents.state import RunState
from huddle.config.settings import Settings, load_settings
from huddle.errors import HuddleError
from huddle.models.factory import ClientWrapper, build_client
from huddle.models.metering import MeteredClient
from huddle.teams.managed_chat import Event
from huddle.teams.manager import Decision, Policy
from huddle.teams.results import RunResult as RunResult  # re-exported: where callers have always found it
from huddle.teams.results import UsageSummary, record_of
from huddle.usage import UsageLedger, usage_scope
from huddle.usage.budget import Governor

if TYPE_CHECKING:
    from huddle.memory.store import VectorMemory
    from huddle.teams.kinds import PatternSpec
    from huddle.teams.spec import AgentSpec, TeamSpec

    AnySpec = TeamSpec | PatternSpec


class TeamBusyError(HuddleError):
    """A task was started on a team that is already running one; wait for it, or use another team."""


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
    """One run in progress: its task, where members post messages, and the decisions and failures it records.

    Per run, never per team, so nothing of one task leaks into the result of the next.
    """

    task: str
    run_id: str
    token: CancellationToken
    ledger: UsageLedger
    queue: asyncio.Queue[Event | RunResult | None] = field(default_factory=asyncio.Queue)
    messages: list[BaseChatMessage] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    worker: asyncio.Task[None] | None = None
    stream: weakref.ref[AsyncGenerator[Event | RunResult, None]] | None = None  # what the caller listens to

    def emit(self, item: Event) -> None:
        """Stream `item` to the caller; chat messages also go into the result."""
        if isinstance(item, BaseChatMessage):
            self.messages.append(item)
        self.queue.put_nowait(item)

    def record(self, decision: Decision) -> None:
        """Keep a decision in the result and, beside the run's calls, in the ledger."""
        self.decisions.append(decision)
        self.ledger.record_decision(decision.turn, decision.speaker, decision.policy, decision.reason)

    def decide(self, speaker: str, policy: Policy, reason: str) -> None:
        """Record (and trace) why `speaker` runs."""
        decision = Decision(turn=len(self.decisions) + 1, speaker=speaker, policy=policy, reason=reason)
        tracing.event(f"decision {speaker}", "decision", **decision.model_dump())
        self.record(decision)

    def fail(self, error: MemberError) -> None:
        self.failures[error.member] = error.reason

    def absorb(self, member: str, result: RunResult) -> None:
        """Keep a nested team's decisions and failures, named after the member that ran it."""
        for decision in result.decisions:
            update = {"turn": len(self.decisions) + 1, "speaker": f"{member}/{decision.speaker}"}
            self.decisions.append(decision.model_copy(update=update))
        for name, reason in result.failures.items():
            self.failures[f"{member}/{name}"] = reason


@dataclass
class TeamContext:
    """What a custom agent with a ``bind(context)`` method receives when its team is built, in every kind: the team
    (its ``settings``, ``workspace``, run ``state`` and shared ``memory``), its own name in the team, and a factory
    for a metered model client in that name."""

    team: Team
    name: str
    client: Callable[[], MeteredClient]


class Team(ABC):
    """A team of any kind built from a spec; run tasks on it one after another with `run` or `run_stream`.

    Build one with `Team.load` (a preset or a YAML file), `Team.chat` (a group chat from agents), or a kind's class.
    """

    kind: ClassVar[str]

    def __init__(
        self,
        spec: AnySpec,
        settings: Settings,
        *,
        ledger: UsageLedger | None = None,
        memory: VectorMemory | None = None,
        session_id: str | None = None,
        workspace: Path | None = None,
        wrap_client: ClientWrapper | None = None,
        governor: Governor | None = None,
        approve: ApprovalHook | None = None,
    ) -> None:
        """`approve`: the approval hook (`huddle.agents.approval`), over the spec's ``team.approve``.

        `wrap_client` is passed to `build_client` for every model client of the team (e.g. record/replay).

        `governor` is a parent team's, given to a nested team: one budget for the whole tree of teams, with one set of
        reservations for its concurrent calls and one `stopped` the parent reports. Without one the team governs
        itself (it is the root), and only the root starts and ends the governor's run."""
        self.spec: AnySpec = spec
        self.settings = settings
        self.ledger = ledger or UsageLedger()
        self.session_id = session_id
        self.workspace = workspace or settings.workspace_dir
        self.state = RunState(session_scope=f"session:{session_id}" if session_id else None)
        self._owns_governor = governor is None
        self.governor = governor or Governor(settings.budget, self.ledger, final_agent=self.responder)
        self._wrap_client = wrap_client
        self.approve_hook = approve
        self._memory = memory
        self._clients: list[MeteredClient] = []
        self._run: Run | None = None

    @property
    @abstractmethod
    def responder(self) -> str:
        """The source of the messages that carry the run's answer (what ``huddle run`` shows as the answer)."""

    @abstractmethod
    async def orchestrate(self, run: Run) -> Outcome:
        """Put the members to work on ``run.task``, posting with ``run.emit``; never raise for a member's failure."""

    @abstractmethod
    async def save_state(self) -> dict[str, Any]:
        """What a durable session keeps of the team (its conversation, its members' states)."""

    @abstractmethod
    async def load_state(self, state: dict[str, Any]) -> None:
        """Restore what `save_state` returned."""

    @property
    def memory(self) -> VectorMemory:
        """The shared vector memory, opened on first use (only teams with a memory agent pay for it)."""
        if self._memory is None:
            from huddle.memory.store import VectorMemory

            self._memory = VectorMemory.from_settings(self.settings)
        return self._memory

    def client(self, agent: str, model: str | None = None) -> MeteredClient:
        """A metered, budgeted client in `agent`'s name: its own `model` profile, else the settings', else the team's;
        the team closes it."""
        choice = model or self.settings.model or self.spec.team.model
        client = build_client(
            self.settings.profile(choice),
            self.ledger,
            agent=agent,
            governor=self.governor,
            profiles=self.settings.profiles,
            cache_dir=self.settings.cache_dir,
            wrap=self._wrap_client,
        )
        self._clients.append(client)
        return client

    def bind(self, agent: object, name: str, model: str | None) -> None:
        """Give a custom agent with a ``bind(context)`` method its `TeamContext`."""
        bind = getattr(agent, "bind", None)
        if callable(bind):
            bind(TeamContext(team=self, name=name, client=lambda: self.client(name, model)))

    async def proceed(self, run: Run, decisions: dict[str, ApprovalDecision]) -> Outcome:
        """Take up the run that paused for approvals once every pending call is decided (`decisions`, also in
        ``state.decided``); the kinds that can pause do."""
        raise HuddleError(f"a {self.kind} team has no run waiting for approval")

    def check_decisions(self, decisions: dict[str, ApprovalDecision]) -> None:
        """Refuse, before anything runs, decisions that do not fit the pending calls (`HuddleError`, one line)."""
        check_decisions(self.state.pending, decisions)

    def customer_decisions(self, text: str) -> dict[str, ApprovalDecision] | None:
        """The decisions a customer's message gives the pending calls when a member answers for the customer
        (`ReplyDecider`: the support router reads "yes" as approval, "no" / "wait" as a denial); else None (a new
        message: the paused calls never run)."""
        from huddle.teams.spec import TeamSpec

        pending = self.state.pending
        if not pending or not isinstance(self.spec, TeamSpec):
            return None
        decider = reply_decider(m.use for m in self.spec.agents if m.use)
        answer = decider.approval_reply(text, pending) if decider is not None else None
        if not answer:
            return None
        return {call: decision.model_copy(update={"by": "customer"}) for call, decision in answer.items()}

    def resume_stream(
        self,
        decisions: dict[str, ApprovalDecision],
        *,
        run_id: str | None = None,
        stream_answer: bool = True,
        checkpoint: Checkpoint | None = None,
    ) -> AsyncGenerator[Event | RunResult, None]:
        """Like `run_stream`, for the run that paused for approvals: `decisions` maps pending calls' ids to
        approve / deny(reason) / edit(args) (`ApprovalDecision`); raises `HuddleError` when they do not fit.

        Some of the calls may be decided now and the rest later: nothing runs until every one is decided (the run
        stays ``awaiting_approval`` with the undecided ones), and a call keeps its first decision. The run goes on
        under the paused run's id unless `run_id` says otherwise, so its run budget counts what it spent before it
        paused. `checkpoint` keeps the decisions and which approved calls ran (a durable session's store)."""
        self.check_decisions(decisions)
        run = Run(
            self.state.task, run_id or self.state.run_id or uuid.uuid4().hex[:12], CancellationToken(), self.ledger
        )
        stream = self._stream_run(run, stream_answer, decisions, checkpoint)
        run.stream = weakref.ref(stream)
        return stream

    async def resume(self, decisions: dict[str, ApprovalDecision], **kwargs: Any) -> RunResult:
        """`resume_stream` to the end: the run's result (an answer, or more calls waiting for approval)."""
        result: RunResult | None = None
        async for item in self.resume_stream(decisions, stream_answer=False, **kwargs):
            if isinstance(item, RunResult):
                result = item
        assert result is not None  # run_stream always ends with a result
        return result

    def run_stream(
        self,
        task: str,
        *,
        run_id: str | None = None,
        cancellation_token: CancellationToken | None = None,
        stream_answer: bool = True,
    ) -> AsyncGenerator[Event | RunResult, None]:
        """Yield the task, every message and event as the team produces it, then the `RunResult`; with
        `stream_answer` a group chat's answer also arrives as chunk events while it is written.

        Raises `TeamBusyError` (when iterated) if the team is running another task that is still being listened to.
        """
        run = Run(task, run_id or uuid.uuid4().hex[:12], cancellation_token or CancellationToken(), self.ledger)
        stream = self._stream_run(run, stream_answer)
        run.stream = weakref.ref(stream)
        return stream

    async def _stream_run(
        self,
        run: Run,
        stream_answer: bool,
        decisions: dict[str, ApprovalDecision] | None = None,
        save: Checkpoint | None = None,
    ) -> AsyncGenerator[Event | RunResult, None]:
        await self._claim(run)
        worker = run.worker = asyncio.create_task(self._execute(run, stream_answer, decisions, save))
        worker.add_done_callback(lambda _: run.queue.put_nowait(None))
        try:
            while (item := await run.queue.get()) is not None:
                yield item
            worker.result()  # a crash of the loop reaches the caller
        finally:
            await _stop(worker)
            if self._run is run:
                self._run = None

    async def _claim(self, run: Run) -> None:
        """Make `run` the team's run, unless another is in progress. A run whose stream nobody holds any more (a
        caller broke out of it) is abandoned: it is stopped now rather than when its stream is collected."""
        current = self._run
        if current is not None:
            if current.stream is not None and current.stream() is not None:
                raise TeamBusyError(
                    f"team {self.spec.team.name!r} is already running a task (run {current.run_id}); a team works "
                    "on one task at a time: wait for it to finish, or build another team for concurrent tasks"
                )
            if current.worker is not None:
                await _stop(current.worker)
        self._run = run

    async def _execute(
        self,
        run: Run,
        stream_answer: bool,
        decisions: dict[str, ApprovalDecision] | None,
        save: Checkpoint | None = None,
    ) -> None:
        """The run, in its own task: usage scope and trace are entered and left here, whatever the caller does.
        With `decisions` it is the paused run taken up again."""
        if save is not None:  # in this task's own context: seen by the nested teams' runs it starts, no one else
            checkpointing(save)
        asked, paused_run = {p.id for p in self.state.pending}, self.state.run_id
        if decisions is None:
            self.state.start(run.task, run.run_id, stream_answer=stream_answer)
        else:
            self.state.run_id, self.state.stream_answer = run.run_id, stream_answer
        if self._owns_governor:  # a resumed run's budget counts what the paused run spent, under whichever id
            self.governor.start_run(continues=paused_run if decisions is not None else None)
        info = {"team": self.spec.team.name, "team_kind": self.kind, "session_id": self.session_id}
        with (
            usage_scope(run_id=run.run_id, session_id=self.session_id),
            tracing.trace_run(self.settings.run_log(), run.run_id, task=run.task[:300], **info) as root,
        ):
            outcome = await (self.orchestrate(run) if decisions is None else self._take_up(run, decisions))
            outcome = self.settle(outcome)
            for call in (p for p in self.state.pending if p.id not in asked and not p.path):  # a nested one: its own
                self.ledger.record_decision(0, call.agent, "approval", f"asked: {call.tool} ({call.id}): {call.reason}")
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
        run.queue.put_nowait(result)

    async def _take_up(self, run: Run, decisions: dict[str, ApprovalDecision]) -> Outcome:
        """Keep the new decisions (an expired call is denied) before anything runs; go on once every pending call is
        decided, unless the run's budget is spent by now (the governor counts the paused run's spending too): then
        none of the approved calls runs."""
        timeout = getattr(self.spec.team, "approval_timeout_s", DEFAULT_TIMEOUT_S)
        now = effects.now()
        for call in self.state.waiting:
            if call.id in decisions:
                self.state.decided[call.id] = settled(call, decisions[call.id], timeout, now)
        await checkpoint()
        if self.state.waiting:
            return Outcome("", AWAITING)
        if self.governor.level() == "hard":
            calls = ", ".join(f"{p.tool} ({p.id})" for p in self.state.pending)
            self.state.pending = []
            reason = "budget: the run's budget was spent before the approved calls could run"
            return Outcome(f"Stopped: the run's budget was spent before it resumed, so {calls} did not run.", reason)
        return await self.proceed(run, dict(self.state.decided))

    async def run(self, task: str, **kwargs: Any) -> RunResult:
        """Run one task to the end and return its result (the answer is not streamed: nobody would read it)."""
        result: RunResult | None = None
        async for item in self.run_stream(task, stream_answer=False, **kwargs):
            if isinstance(item, RunResult):
                result = item
        assert result is not None  # run_stream always ends with a result
        return result

    def settle(self, outcome: Outcome) -> Outcome:
        """The outcome as every kind reports it: no answer is never a success (its stop reason starts ``error:``,
        which ``huddle run`` exits 1 on), except a run waiting for approvals (no answer yet, ``awaiting_approval``);
        a run the budget stopped says so first, even when the refused calls were
        a nested team's (the kind's own reason follows)."""
        if outcome.stop_reason == AWAITING and self.state.pending:
            return outcome  # no answer yet, and not a failure: the run goes on when a person decides
        if not outcome.answer.strip():
            reason = outcome.stop_reason
            return Outcome("", reason if reason.startswith("error:") else f"error: no answer ({reason})")
        stopped = self.governor.stopped
        if stopped is not None and not outcome.stop_reason.startswith("budget"):
            return Outcome(outcome.answer, f"{stopped.reason}; {outcome.stop_reason}")
        return outcome

    def result(self, run: Run, outcome: Outcome) -> RunResult:
        return RunResult(
            run_id=run.run_id,
            session_id=self.session_id,
            team=self.spec.team.name,
            kind=self.kind,
            answer=outcome.answer,
            stop_reason=outcome.stop_reason,
            messages=[record_of(m) for m in run.messages],
            usage=UsageSummary(
                **self.ledger.totals(run_id=run.run_id).model_dump(),
                by_agent=self.ledger.by("agent", run_id=run.run_id),
                by_model=self.ledger.by("model", run_id=run.run_id),
            ),
            decisions=run.decisions,
            failures=run.failures,
            budget=self.governor.report() if self.settings.budget.active else None,
            pending=self.state.waiting,
        )

    async def close(self) -> None:
        """Stop a run still in progress, then release what the kind holds (`release`) and the team's model clients
        (their HTTP connections): in that order, so nothing is closed under a member still at work."""
        if self._run is not None and self._run.worker is not None:
            await _stop(self._run.worker)
        await self.release()
        for client in self._clients:
            await client.close()

    @abstractmethod
    async def release(self) -> None:
        """Close what the kind holds besides its model clients (its members, MCP servers)."""

    async def __aenter__(self) -> Team:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @classmethod
    def load(cls, team: str | Path | AnySpec, settings: Settings | None = None, **kwargs: Any) -> Team:
        """A team of any kind from a preset name (``"assistant"``), a team YAML path or a spec; `settings` default to
        `load_settings()`; `kwargs` as for the constructor (ledger, memory, session_id, workspace, wrap_client)."""
        return build_team(team, settings or load_settings(), **kwargs)

    @classmethod
    def chat(cls, name: str, agents: list[AgentSpec], settings: Settings | None = None, **options: Any) -> Team:
        """A group chat from agents (``huddle.planner()``, ``huddle.tool_executor(tools=[...])``, ...), as in YAML:
        `options` are the ``team:`` block's fields (max_turns, model, plan, ...)."""
        from huddle.teams.spec import TeamInfo, TeamSpec

        return cls.load(TeamSpec(team=TeamInfo(name=name, **options), agents=agents), settings)


def build_team(spec: str | Path | AnySpec, settings: Settings, **kwargs: Any) -> Team:
    """A team of the spec's kind (a preset name or a YAML path is loaded first); `kwargs` as for `Team`."""
    # Imported here: every kind subclasses Team, defined above.
    from huddle.teams.event_driven import EventDrivenTeam
    from huddle.teams.group_chat import GroupChatTeam
    from huddle.teams.hierarchical import HierarchicalTeam
    from huddle.teams.kinds import load_any_team
    from huddle.teams.parallel import ParallelTeam
    from huddle.teams.sequential import SequentialTeam

    if isinstance(spec, str | Path):
        spec = load_any_team(spec)
    kinds: list[type[Team]] = [GroupChatTeam, SequentialTeam, ParallelTeam, HierarchicalTeam, EventDrivenTeam]
    return {cls.kind: cls for cls in kinds}[spec.team.kind](spec, settings, **kwargs)


def run(team: str | Path, task: str, settings: Settings | None = None, **kwargs: Any) -> RunResult:
    """Run one task on a preset or a team YAML and return its result, for scripts with no event loop of their own:
    ``huddle.run("assistant", "What is 17*23?").answer``."""

    async def main() -> RunResult:
        async with Team.load(team, settings, **kwargs) as loaded:
            return await loaded.run(task)

    return asyncio.run(main())


async def _stop(worker: asyncio.Task[None]) -> None:
    """Cancel a run's task if it is still going, and wait until it has left its usage scope and trace."""
    if not worker.done():
        worker.cancel()
        with suppress(asyncio.CancelledError):
            await worker
