"""Faults a scripted server injects instead of (or around) a reply: 429 with ``Retry-After``, 500, a stall past the
client's timeout, a stream cut before its end, and tool-call arguments cut mid-JSON.

Faults are scripted per `huddle.testing.Rule` or drawn at random with a seeded generator (``fault_rate``), so a
chaos test fails the same way on every run.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict, Field

from huddle.testing.replies import Reply, ToolCall

FaultKind: TypeAlias = Literal["rate_limit", "server_error", "timeout", "cut_stream", "malformed_tool_json"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

# A proper prefix of a JSON object is never valid JSON; this one reads like a real truncation.
_MALFORMED_ARGUMENTS = '{"order_id": "10'
_UNKNOWN_TOOL = "unknown_tool"


class Fault(BaseModel):
    """A failure to inject instead of (or around) a reply, to test a client's error handling."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    retry_after: float = Field(default=1.0, ge=0.0)
    """rate_limit: seconds sent in ``Retry-After`` (and ``retry-after-ms``)."""
    delay_s: float = Field(default=30.0, ge=0.0)
    """timeout: seconds to stall before answering; give the client a shorter timeout. ``stop()`` cuts it short."""


def fault_template(value: Any) -> Fault:
    """A `Fault` from a fault or its kind's name, as `ScriptedServer(fault_kinds=...)` takes them."""
    if isinstance(value, Fault):
        return value
    if value not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {value!r}; expected one of {', '.join(FAULT_KINDS)}")
    return Fault(kind=value)


def malformed(reply: Reply) -> Reply:
    """The reply's first tool call (or ``unknown_tool``) with arguments cut mid-JSON, as a flaky model sends."""
    name, arguments, call_id = _UNKNOWN_TOOL, _MALFORMED_ARGUMENTS, None
    if reply.tool_calls:
        first = reply.tool_calls[0]
        name, call_id = first.name, first.id
        if isinstance(first.arguments, dict):
            text = json.dumps(first.arguments)
            arguments = text[: max(1, len(text) // 2)]  # a proper prefix of an object: never valid JSON
    return Reply(
        content=None,
        tool_calls=[ToolCall(name=name, arguments=arguments, id=call_id)],
        usage=reply.usage,
        include_usage=reply.include_usage,
        finish_reason="tool_calls",
        delay_s=reply.delay_s,
    )
