"""The scenario file: which team serves the customer, what the customer says, and what must be true afterwards.

A scenario names the team, the policy documents it may recall, the database it acts on, the customer's messages
(or how a simulated customer behaves) and its expectations; paths are relative to the file::

    name: refund-damaged-item
    team: support                    # preset name or path to a team YAML
    model: default                   # a profile, or a scripted-model rule file (models/scripted.yaml); optional
    knowledge: [kb/returns.md]       # ingested into a fresh memory scope for the scenario
    database: fixtures/orders.sql    # loaded into a fresh SQLite file per trial
    user:                            # the customer's messages; or `simulator: {profile, instruction, stop}`
      - "Hi, order 1042 arrived broken. I want my money back."
      - approve: issue_refund        # or `approve: all`, `deny: {tool: issue_refund, reason: "..."}`
    expect:
      intent: refund
      asked_approval: [{name: issue_refund, args: {order_id: "1042"}}]
      tools_called: [{name: lookup_order, args: {order_id: "1042"}}, {name: issue_refund}]
      tools_not_called: [cancel_order]
      database: {"SELECT status FROM orders WHERE id='1042'": [["refunded"]]}
      reply_contains: ["refund"]
      max_turns: 16
      max_cost_usd: 0.02

A user turn is a message, or a decision about the tool calls the previous turn left waiting for approval
(`huddle.agents.approval`): ``approve: TOOL`` (or ``all``), ``deny: TOOL`` or ``deny: {tool, reason}``. A plain message
after a paused turn is the customer's own answer, which a member may read as the decision (`huddle.evals.approvals`).

A scenario's `model` may be a scripted-model rule file (`ScriptedModel`): a `huddle.testing.ScriptedServer` answers
from its rules, so a suite runs in CI with no model at all. Loading checks the file, its team and its rule file
before anything runs, so a mistake is one `ConfigError` naming the file, line and field.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from huddle.config.yamlfile import load_model
from huddle.errors import ConfigError
from huddle.testing import Fault, Rule

YAML_SUFFIXES = (".yaml", ".yml")
DEFAULT_STOP = "###STOP###"


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
# A tool name as tools are named; an empty one in `tools_not_called` would pass every trial without checking anything.
ToolName = Annotated[str, Field(min_length=1, max_length=64)]
# An empty intent matches none; an empty `reply_contains` text is in every reply, an empty `reply_not_contains` in none.
Text = Annotated[str, Field(min_length=1)]


class CallExpectation(BaseModel):
    """A tool call that must have been made (or asked for approval): its name and arguments it had (a subset)."""

    model_config = ConfigDict(extra="forbid")

    name: ToolName
    args: dict[str, Any] = Field(default_factory=dict, description="Arguments the call must have had (others may be).")

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    def describe(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.args.items())})"


class ToolExpectation(CallExpectation):
    """A tool call that must have happened, with its outcome."""

    ok: bool | None = Field(None, description="true: it must have succeeded; false: failed or refused; unset: either.")

    def describe(self) -> str:
        outcome = "" if self.ok is None else (" succeeding" if self.ok else " failing")
        return f"{super().describe()}{outcome}"


ALL = "all"


class Denial(BaseModel):
    """A denied tool call and the reason the conversation gets as its result."""

    model_config = ConfigDict(extra="forbid")

    tool: ToolName
    reason: Text = "denied by the user"

    @model_validator(mode="before")
    @classmethod
    def _bare_tool(cls, data: Any) -> Any:
        return {"tool": data} if isinstance(data, str) else data


class ApprovalTurn(BaseModel):
    """A user turn that decides the calls the previous turn left waiting: ``approve: TOOL`` (``all``: every waiting
    call) or ``deny: TOOL`` / ``deny: {tool, reason}``. A waiting call it does not name fails the trial."""

    model_config = ConfigDict(extra="forbid")

    approve: ToolName | None = None
    deny: Denial | None = None

    @model_validator(mode="after")
    def _one_decision(self) -> ApprovalTurn:
        if (self.approve is None) == (self.deny is None):
            raise ValueError("an approval turn gives exactly one of `approve: TOOL` (or all) or `deny: TOOL`")
        return self

    @property
    def tool(self) -> str:
        return self.approve if self.approve is not None else self.deny.tool  # type: ignore[union-attr]

    def describe(self) -> str:
        if self.approve is not None:
            return f"approve: {self.approve}"
        assert self.deny is not None
        return f"deny: {self.deny.tool} ({self.deny.reason})"


class Simulator(BaseModel):
    """A model playing the customer: it follows `instruction` and ends the chat by saying `stop`."""

    model_config = ConfigDict(extra="forbid")

    profile: str | None = Field(None, description="Model profile for the customer; default: the scenario's model.")
    instruction: str = Field(min_length=1, max_length=4000, description="Who the customer is and what they want.")
    stop: str = Field(DEFAULT_STOP, min_length=1, description="What the customer says when done.")
    max_turns: int = Field(6, ge=1, le=30, description="At most this many customer messages.")


def _turn_kind(value: Any) -> str:
    return "approval" if isinstance(value, dict | ApprovalTurn) else "message"


# A message, or (a mapping) an approval turn; told apart by their type, so an error names only the one meant.
Turn = Annotated[Annotated[Text, Tag("message")] | Annotated[ApprovalTurn, Tag("approval")], Discriminator(_turn_kind)]


class Expectations(BaseModel):
    """What must be true when the conversation is over; every one that fails is named in the trial's result."""

    model_config = ConfigDict(extra="forbid")

    intent: Text | list[Text] | None = Field(
        None, description="The intent of the first customer message, or the list of every message's intent."
    )
    tools_called: list[ToolExpectation] = Field(default_factory=list)
    tools_not_called: list[ToolName] = Field(default_factory=list)
    asked_approval: list[CallExpectation] = Field(
        default_factory=list, description="Tool calls that waited for approval (name, or {name, args})."
    )
    not_asked_approval: list[ToolName] = Field(default_factory=list, description="Tools never asked for approval.")
    database: dict[str, list[list[Any]]] = Field(
        default_factory=dict, description="SQL query -> the rows it must return from the trial's database."
    )
    reply_contains: list[Text] = Field(default_factory=list, description="Said to the customer (any reply, any case).")
    reply_not_contains: list[Text] = Field(default_factory=list, description="Never said to the customer (any case).")
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
    user: list[Turn] | None = Field(None, min_length=1)
    simulator: Simulator | None = None
    expect: Expectations = Expectations()
    path: Path | None = Field(None, exclude=True)

    @field_validator("user")
    @classmethod
    def _message_first(cls, user: list[str | ApprovalTurn] | None) -> list[str | ApprovalTurn] | None:
        if user and isinstance(user[0], ApprovalTurn):
            raise ValueError("the first turn must be a message: nothing waits for approval before it")
        return user

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


def load_scenarios(paths: Iterable[Path | str]) -> list[Scenario]:
    """Every scenario file (directories: their ``*.yaml``), checked before anything runs; names must be unique."""
    scenarios = [load_scenario(path) for path in scenario_paths(paths)]
    names = [s.name for s in scenarios]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"scenario names must be unique; repeated: {', '.join(repeated)}")
    return scenarios
