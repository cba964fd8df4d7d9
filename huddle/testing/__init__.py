"""Test helpers for huddle and for users' own teams: a scripted OpenAI-compatible HTTP server."""

from huddle.testing.server import (
    AGENT_HEADER,
    FAULT_KINDS,
    Fault,
    FaultKind,
    RecordedRequest,
    Reply,
    ReplyLike,
    Rule,
    ScriptedServer,
    ToolCall,
)

__all__ = [
    "AGENT_HEADER",
    "FAULT_KINDS",
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "Reply",
    "ReplyLike",
    "Rule",
    "ScriptedServer",
    "ToolCall",
]
