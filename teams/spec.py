"""Team specs: what a team YAML (or the equivalent Python) declares, validated by pydantic.

```yaml
team: {name: assistant, kind: group_chat, max_turns: 12}
agents:
  - {role: planner}
  - {role: tool_executor, tools: [calculator, clock]}
  - {role: memory, optional: true}
  - {role: responder}
```

Presets ship as YAML in ``teams/presets/``; `load_team` accepts a preset name or a path. Errors name the file, the
line and the field.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from huddle import prompts
from huddle.agents.approval import DEFAULT_TIMEOUT_S, ApprovalLevel
from huddle.config.yamlfile import load_model
from huddle.errors import ConfigError
from huddle.tools.mcp import McpServerSpec

Role = Literal["planner", "tool_executor", "memory", "responder"]
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,39}$"


class AgentSpec(BaseModel):
    """One member: a built-in role (and how it differs from the role's defaults), or a custom agent to `use`."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    use: str | None = Field(
        None, description="A custom agent: 'module:Class' or the name of an installed huddle.agents entry point."
    )
    config: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the custom agent class.")
    name: str | None = Field(None, pattern=NAME_PATTERN, description="Defaults to the role; required with `use`.")
    description: str | None = Field(None, max_length=300, description="What the manager reads; defaults to the role's.")
    model: str | None = Field(None, description="Model profile for this agent; defaults to the team's.")
    tools: list[str] = Field(default_factory=list, description="tool_executor: the tools it may call (allowlist).")
    optional: bool = Field(False, description="The budget may skip this agent, and so may a failure.")
    reroute_to: str | None = Field(None, description="If this member fails, the member that takes over its steps.")
    prompt: str | None = Field(None, description="Prompt template name; defaults to the role's.")
    memory_scopes: list[str] = Field(default_factory=list, description="memory: scopes to recall from; first stores.")
    approval: ApprovalLevel | dict[str, ApprovalLevel] | None = Field(
        None,
        description="Which of its tool calls wait for a person: never | writes | always, or a mapping tool -> level; "
        "by default only tools with side_effects: external ask.",
    )

    @model_validator(mode="after")
    def _role_or_use(self) -> AgentSpec:
        if (self.role is None) == (self.use is None):
            raise ValueError("give exactly one of `role` (a built-in role) or `use` (a custom agent)")
        if self.use is not None and self.name is None:
            raise ValueError("a custom agent (`use`) needs a `name`")
        if self.role is not None and self.config:
            raise ValueError("`config` is only for custom agents (`use`)")
        return self

    @property
    def agent_name(self) -> str:
        return self.name or self.role or ""

    @property
    def prompt_name(self) -> str:
        return self.prompt or self.role or "tool_executor"

    @property
    def agent_description(self) -> str:
        return self.description or prompts.load(self.prompt_name).meta.get("description", self.agent_name)


class TeamInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["group_chat"] = "group_chat"
    max_turns: int = Field(12, ge=1, le=200)
    allow_repeated_speaker: bool = False
    model: str | None = Field(None, description="Default model profile for the team's agents and manager.")
    shell: bool = Field(False, description="Offer the run_command tool (in the workspace, with a timeout).")
    plan: Literal["auto", "always"] = Field(
        "auto",
        description="auto: a task that needs none of the team's tools skips the planner and is answered directly "
        "(policy `direct`, decided with no model call); always: every task is planned first.",
    )
    mcp: list[McpServerSpec] = Field(
        default_factory=list,
        description="MCP servers (local stdio commands or streamable-HTTP URLs) whose tools the tool executor gets.",
    )
    approve: str | None = Field(
        None,
        description="An approval hook, 'module:function': approve(call, context) -> True (run), False (deny) or None "
        "(ask as the members' approval levels say).",
    )
    approval_timeout_s: float = Field(
        DEFAULT_TIMEOUT_S, gt=0, description="A pending approval older than this is denied (expired) on resume."
    )


class TeamSpec(BaseModel):
    """A whole team: its settings and members, in roster order."""

    model_config = ConfigDict(extra="forbid")

    team: TeamInfo
    agents: list[AgentSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_members(self) -> TeamSpec:
        names = [a.agent_name for a in self.agents]
        if self.team.kind == "group_chat" and len(names) < 2:
            raise ValueError("a group chat needs at least two members (e.g. a planner and a responder)")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"agent names must be unique; repeated: {', '.join(duplicates)} (set `name:`)")
        responders = [a for a in self.agents if a.role == "responder"]
        if len(responders) != 1:
            raise ValueError(f"a team needs exactly one responder (it ends the run), found {len(responders)}")
        if responders[0].optional:
            raise ValueError("the responder cannot be optional: it gives the answer")
        for role in ("planner", "tool_executor", "memory"):
            if sum(a.role == role for a in self.agents) > 1:
                raise ValueError(f"at most one {role} per team")
        if self.team.mcp and self.member("tool_executor") is None:
            raise ValueError("team.mcp: MCP tools go to the tool executor, and this team has none")
        for agent in self.agents:
            if agent.reroute_to is not None and agent.reroute_to not in names:
                raise ValueError(f"{agent.agent_name}.reroute_to: no member named {agent.reroute_to!r}")
        return self

    def member(self, role: Role) -> AgentSpec | None:
        return next((a for a in self.agents if a.role == role), None)

    @classmethod
    def from_file(cls, path: str | Path) -> TeamSpec:
        """A group chat's team YAML, validated (errors name the file, the line and the field)."""
        return load_team(Path(path))


# The role agents in Python, as short as their YAML lines: `Team.chat("desk", [planner(), responder()])`. The keyword
# options are `AgentSpec`'s fields (name, description, model, optional, reroute_to, prompt, ...).


def planner(**options: Any) -> AgentSpec:
    """The planner: writes the plan of tool calls and steps the manager follows."""
    return AgentSpec(role="planner", **options)


def tool_executor(tools: list[str] | None = None, **options: Any) -> AgentSpec:
    """The tool executor, allowed the named `tools` (built-in or plugin tool names)."""
    return AgentSpec(role="tool_executor", tools=tools or [], **options)


def memory_agent(**options: Any) -> AgentSpec:
    """The memory agent: recalls from and stores into the shared vector memory."""
    return AgentSpec(role="memory", **options)


def responder(**options: Any) -> AgentSpec:
    """The responder: writes the answer, which ends the run."""
    return AgentSpec(role="responder", **options)


def custom_agent(use: str, name: str, **options: Any) -> AgentSpec:
    """A custom agent: `use` is ``"module:Class"`` or an installed ``huddle.agents`` entry point's name."""
    return AgentSpec(use=use, name=name, **options)


def preset_names() -> list[str]:
    folder = resources.files("huddle.teams") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_team(name_or_path: str | Path) -> TeamSpec:
    """A preset by name (``assistant``) or a team YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix and str(name_or_path) in preset_names():
        with resources.as_file(resources.files("huddle.teams") / "presets" / f"{name_or_path}.yaml") as preset:
            return load_model(preset, TeamSpec)
    if not path.is_file():
        raise ConfigError(f"team {str(name_or_path)!r}: no such preset ({', '.join(preset_names())}) or file")
    spec = load_model(path, TeamSpec)
    # MCP servers' relative paths are relative to the team file, wherever huddle is started from.
    spec.team.mcp = [server.with_base_dir(path.parent.resolve()) for server in spec.team.mcp]
    return spec
