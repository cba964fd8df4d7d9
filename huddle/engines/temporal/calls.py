"""What crosses between callers, a workflow and the workers' activities: plain pydantic models (Temporal's pydantic
converter carries them), never live objects; and the text of the failures that come back."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from temporalio.exceptions import ApplicationError

from huddle.agents.approval import ApprovalDecision
from huddle.usage.budget import Budget

REFUSED = "DecisionsRefused"
"""The failure type of an ``approve`` Update its validator refused (nothing entered the history)."""


def failure_text(cause: BaseException | None) -> str:
    """What a failure from a workflow or an activity says: an `ApplicationError`'s own message (what huddle raised
    there), else the error as text."""
    return cause.message if isinstance(cause, ApplicationError) else str(cause)


class ModelCall(BaseModel):
    """One model call a workflow's team makes, for any worker to send."""

    profile: dict[str, Any] = Field(description="The ModelProfile as JSON (it names its key's variable, never a key).")
    agent: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str = "auto"
    json_output: bool | str | None = Field(None, description="True, or a pydantic model as 'module:QualName'.")
    extra_create_args: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None
    session_id: str | None = None


class ModelReply(BaseModel):
    """The call's `CreateResult` as JSON, and the usage details autogen's result does not carry."""

    result: dict[str, Any]
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class SessionStart(BaseModel):
    """A session workflow's input: the team (a preset name or a team file the workers can read), the session, and,
    after a continue-as-new, where the team was."""

    team: str
    session_id: str
    turns_per_run: int = Field(100, ge=1, description="Turns before the workflow continues as new.")
    state: dict[str, Any] | None = None
    run_state: dict[str, Any] | None = None
    spent: list[dict[str, Any]] = Field(default_factory=list, description="Earlier runs' ledger rows (the budget).")


_BUDGET = "The budget this run is held to (a served key's own limits folded in); the workers' when None."


class TurnRequest(BaseModel):
    task: str
    run_id: str
    budget: Budget | None = Field(None, description=_BUDGET)


class ApproveRequest(BaseModel):
    decisions: dict[str, ApprovalDecision] = Field(description="Pending call id -> its decision.")
    run_id: str | None = None
    budget: Budget | None = Field(None, description=_BUDGET)
