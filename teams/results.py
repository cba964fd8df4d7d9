"""What a run returns, whatever the team's kind: the `RunResult` (the answer, why it stopped, the messages, the usage,
the decisions, the failures, the calls waiting for approval), kept apart from the run loop that makes it."""

from __future__ import annotations

from typing import Any

from autogen_agentchat.messages import BaseChatMessage
from pydantic import BaseModel, Field

from huddle.agents.approval import PendingCall
from huddle.teams.manager import Decision
from huddle.usage import Totals


class MessageRecord(BaseModel):
    source: str
    type: str
    content: str
    metadata: dict[str, str] = Field(
        default_factory=dict, description="What the member reported besides its text (kind, intent, tool calls)."
    )
    prompt_tokens: int = 0
    completion_tokens: int = 0


class UsageSummary(Totals):
    by_agent: dict[str, Totals] = Field(default_factory=dict)
    by_model: dict[str, Totals] = Field(default_factory=dict)


class RunResult(BaseModel):
    """Everything a caller (or ``huddle run --json``) needs to know about one task, whatever the team's kind."""

    run_id: str
    session_id: str | None
    team: str
    kind: str = "group_chat"
    answer: str
    stop_reason: str
    messages: list[MessageRecord]
    usage: UsageSummary
    decisions: list[Decision]
    failures: dict[str, str] = Field(default_factory=dict, description="Members that failed: name -> reason.")
    budget: dict[str, Any] | None = None
    pending: list[PendingCall] = Field(
        default_factory=list, description="Tool calls waiting for approval (stop_reason awaiting_approval)."
    )


def record_of(message: BaseChatMessage) -> MessageRecord:
    """A chat message as the result keeps it: who, which type, the text and its tokens."""
    usage = message.models_usage
    return MessageRecord(
        source=message.source,
        type=type(message).__name__,
        content=message.to_text(),
        metadata=dict(message.metadata),
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
    )
