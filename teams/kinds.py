"""Specs for the orchestration kinds besides the managed group chat, and one loader for every kind of team YAML.

A team YAML keeps the group chat's shape — ``team:`` then ``agents:`` — and ``team.kind`` says how the members work:

```yaml
team: {name: review, kind: parallel, member_timeout_s: 30}   # sequential | parallel | hierarchical | event_driven
agents:
  - {name: security, instruction: "List the security problems in the text you are given."}
  - {name: style, instruction: "List the style problems.", model: cheap}
  - {name: research, team: research.yaml}        # a whole team as a member: a preset, a path or an inline spec
aggregator: {name: editor, instruction: "Merge the reviews into one report."}  # parallel only (else `merge`)
```

Members are deliberately small: a model agent is a name, an instruction (its system prompt), a model profile and an
``input`` template (``{input}``, ``{task}``, ``{topic}``); a member can instead be a nested team (``team:``) or a custom
autogen ``ChatAgent`` (``use: "module:Class"`` with ``config``). Built-in roles (planner, tool executor, memory,
responder) live in group chats, so a pattern that needs them nests a ``kind: group_chat`` team.

`load_any_team` reads any team YAML (or preset) and validates it with the right model, so errors still name the file,
the line and the field; nested team files are loaded then too (relative to the file that names them), so a typo in a
sub-team fails before anything runs, and a file that includes itself is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from huddle.config.yamlfile import load_model, read_yaml
from huddle.errors import ConfigError
from huddle.teams.spec import NAME_PATTERN, TeamSpec, load_team, preset_names

PatternKind = Literal["sequential", "parallel", "hierarchical", "event_driven"]
TeamKind = Literal["group_chat", "sequential", "parallel", "hierarchical", "event_driven"]
TOPIC_PATTERN = r"^[A-Za-z][A-Za-z0-9_.:-]{0,59}$"
FAILED_TOPIC = "member_failed"  # published when an event handler fails, so other members can react to failures
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_INPUT_PLACEHOLDERS = frozenset({"input", "task", "topic"})


class MemberSpec(BaseModel):
    """One member of a sequential, parallel, hierarchical or event-driven team (or its aggregator or manager)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = Field(None, max_length=300, description="What a hierarchical manager reads.")
    instruction: str | None = Field(None, max_length=4000, description="A model agent's system prompt.")
    model: str | None = Field(None, description="Model profile for this member; defaults to the team's.")
    input: str = Field(
        "{input}",
        max_length=4000,
        description="What the member is sent: {input} (previous output, fan-out input, sub-task or event payload), "
        "{task} (the run's task), {topic} (the event's topic).",
    )
    team: str | AnyTeamSpec | None = Field(None, description="A nested team: a preset name, a YAML path or a spec.")
    use: str | None = Field(None, description="A custom autogen ChatAgent: 'module:Class' or a huddle.agents name.")
    config: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the `use` class.")
    timeout_s: float | None = Field(None, gt=0, description="Give up on this member after so long (a failure).")
    optional: bool = Field(False, description="sequential: on failure, pass its input on instead of stopping.")
    subscribe: list[Annotated[str, Field(pattern=TOPIC_PATTERN)]] = Field(
        default_factory=list, description="event_driven: the topics this member reacts to."
    )
    publish: list[Annotated[str, Field(pattern=TOPIC_PATTERN)]] = Field(
        default_factory=list,
        description="event_driven: the topic its output is published on; with several, a first line "
        "'topic: NAME' picks one (default: the first).",
    )

    @model_validator(mode="after")
    def _one_body(self) -> MemberSpec:
        bodies = [field for field in ("instruction", "team", "use") if getattr(self, field) is not None]
        if len(bodies) > 1:
            raise ValueError(f"give only one of `instruction`, `team` or `use` (got {', '.join(bodies)})")
        if not bodies and self.description is None:
            raise ValueError("a model agent needs an `instruction` (or at least a `description`)")
        if self.use is None and self.config:
            raise ValueError("`config` is only for custom agents (`use`)")
        unknown = set(_PLACEHOLDER.findall(self.input)) - _INPUT_PLACEHOLDERS
        if unknown:
            raise ValueError(f"input: unknown placeholder(s) {', '.join(sorted(unknown))} (use {{input}}, {{task}})")
        return self

    @property
    def kind(self) -> Literal["model", "team", "agent"]:
        return "team" if self.team is not None else "agent" if self.use is not None else "model"

    @property
    def member_description(self) -> str:
        """What a manager reads about this member: its description, else the start of its instruction."""
        if self.description:
            return self.description
        if self.instruction:
            return self.instruction.split("\n", 1)[0][:300]
        return f"the team {self.team if isinstance(self.team, str) else self.team_spec_name}"

    @property
    def team_spec_name(self) -> str:
        return self.team.team.name if isinstance(self.team, TeamSpec | PatternSpec) else str(self.team)


class PatternInfo(BaseModel):
    """The ``team:`` block of a pattern team: its kind and the options of that kind."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    kind: PatternKind
    model: str | None = Field(None, description="Default model profile for the members.")
    member_timeout_s: float | None = Field(None, gt=0, description="Default per-member timeout.")
    merge: str = Field(
        "concat", description="parallel without an aggregator: 'concat' or a 'module:function' (dict -> str)."
    )
    max_assignments: int = Field(8, ge=1, le=32, description="hierarchical: most sub-tasks the manager may hand out.")
    start_topic: str = Field("task", pattern=TOPIC_PATTERN, description="event_driven: the task is published here.")
    stop_topics: list[Annotated[str, Field(pattern=TOPIC_PATTERN)]] = Field(
        default_factory=list, description="event_driven: an event on one of these ends the run; its payload answers."
    )
    max_events: int = Field(50, ge=1, le=10_000, description="event_driven: most events one run may publish.")


class PatternSpec(BaseModel):
    """A sequential, parallel, hierarchical or event-driven team: its settings and members."""

    model_config = ConfigDict(extra="forbid")

    team: PatternInfo
    agents: list[MemberSpec] = Field(min_length=1)
    aggregator: MemberSpec | None = Field(None, description="parallel: the member that combines the outputs.")
    manager: MemberSpec | None = Field(None, description="hierarchical: the model agent that delegates.")

    @model_validator(mode="after")
    def _check_kind(self) -> PatternSpec:
        kind = self.team.kind
        names = [m.name for m in self.members()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"member names must be unique; repeated: {', '.join(duplicates)}")
        if self.aggregator is not None and kind != "parallel":
            raise ValueError("`aggregator` is only for kind: parallel")
        if self.team.merge != "concat" and (kind != "parallel" or self.aggregator is not None):
            raise ValueError("`merge` is only for kind: parallel without an aggregator")
        if (self.manager is None) == (kind == "hierarchical"):
            raise ValueError("kind: hierarchical needs a `manager` (and only it may have one)")
        if self.manager is not None and self.manager.kind != "model":
            raise ValueError("manager: must be a model agent (an `instruction`, no `team` or `use`)")
        for i, member in enumerate(self.agents):
            if kind != "event_driven" and (member.subscribe or member.publish):
                raise ValueError(f"agents.{i}: `subscribe`/`publish` are only for kind: event_driven")
            if kind == "event_driven" and not member.subscribe:
                raise ValueError(f"agents.{i} ({member.name}): subscribe it to at least one topic")
        if kind == "event_driven":
            topics = {t for m in self.agents for t in m.subscribe}
            if self.team.start_topic not in topics:
                raise ValueError(f"no member subscribes to the start topic {self.team.start_topic!r}")
        return self

    def members(self) -> list[MemberSpec]:
        """Every member, the aggregator or manager first."""
        return [m for m in (self.manager, self.aggregator) if m is not None] + list(self.agents)


def _kind_of(value: Any) -> str:
    """Which model a team spec (dict or model) is: the group chat's or the patterns'."""
    info = value.get("team") if isinstance(value, dict) else getattr(value, "team", None)
    kind = info.get("kind") if isinstance(info, dict) else getattr(info, "kind", None)
    return "group_chat" if kind in (None, "group_chat") else "pattern"


AnyTeamSpec = Annotated[
    Annotated[TeamSpec, Tag("group_chat")] | Annotated[PatternSpec, Tag("pattern")], Discriminator(_kind_of)
]
MemberSpec.model_rebuild()
PatternSpec.model_rebuild()


def team_schema() -> dict[str, Any]:
    """The JSON Schema of a team YAML of any kind (``huddle schema``), for editors' completion and checks."""
    from pydantic import TypeAdapter

    schema: dict[str, Any] = TypeAdapter(AnyTeamSpec).json_schema()
    schema["title"] = "huddle team"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def load_any_team(name_or_path: str | Path, *, _including: tuple[Path, ...] = ()) -> TeamSpec | PatternSpec:
    """A preset by name or a team YAML of any kind, with the team files its members name loaded in place."""
    path = Path(name_or_path)
    if not path.suffix and str(name_or_path) in preset_names():
        return load_team(str(name_or_path))
    if not path.is_file():
        raise ConfigError(f"team {str(name_or_path)!r}: no such preset ({', '.join(preset_names())}) or file")
    data, _ = read_yaml(path)
    if _kind_of(data if isinstance(data, dict) else {}) == "group_chat":
        return load_team(path)
    spec = load_model(path, PatternSpec)
    return _with_includes(spec, path, (*_including, path.resolve()))


def _with_includes(spec: PatternSpec, path: Path, including: tuple[Path, ...]) -> PatternSpec:
    """`spec` with every member's ``team: FILE`` replaced by the loaded spec (inline specs searched too)."""
    updates: dict[str, Any] = {}
    for field in ("manager", "aggregator"):
        member = getattr(spec, field)
        if member is not None:
            updates[field] = _include(member, f"{path}: {field}.team", path, including)
    updates["agents"] = [_include(m, f"{path}: agents.{i}.team", path, including) for i, m in enumerate(spec.agents)]
    return spec.model_copy(update=updates)


def _include(member: MemberSpec, where: str, path: Path, including: tuple[Path, ...]) -> MemberSpec:
    if isinstance(member.team, PatternSpec):
        return member.model_copy(update={"team": _with_includes(member.team, path, including)})
    if not isinstance(member.team, str):
        return member
    ref = member.team
    if Path(ref).suffix or ref not in preset_names():
        target = (path.parent / ref).resolve()
        if target in including:
            raise ConfigError(f"{where}: {ref!r} includes itself (through {' -> '.join(p.name for p in including)})")
        if not target.is_file():
            raise ConfigError(f"{where}: no such team file {ref!r} (paths are relative to {path.parent})")
        ref = str(target)
    return member.model_copy(update={"team": load_any_team(ref, _including=including)})
