"""Test helpers for huddle and for users' own teams: a scripted OpenAI-compatible HTTP server (`server`), the
script it answers from (`rules`, `replies`, `faults`) and the OpenAI wire format it speaks (`wire`)."""

from huddle.models import AGENT_HEADER
from huddle.testing.faults import FAULT_KINDS, Fault, FaultKind
from huddle.testing.replies import Reply, ToolCall
from huddle.testing.rules import RecordedRequest, ReplyLike, Rule
from huddle.testing.server import ScriptedServer

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
