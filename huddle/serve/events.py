"""One neutral view of what a team does during a run, which every protocol ``huddle serve`` speaks is built from.

A run yields autogen events and messages (`huddle.teams.managed_chat.Event`), then a `RunResult`; a run on the
Temporal engine returns whole, its messages as the result's `MessageRecord` s, which read the same. The OpenAI
extension, the A2A status updates, the AG-UI stream and the web page all need the same few facts from them: who
speaks, why the manager chose them, the plan, the tool calls with their arguments and results, the answer's text
as it is written, and the meter. `describe` reads those facts once, so each protocol only maps `TeamEvent` kinds to
its own shapes and no protocol parses autogen's types itself.

Everything here is data from a model, a tool or memory: it is passed on as text, never acted upon.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from autogen_agentchat.messages import (
    BaseChatMessage,
    ModelClientStreamingChunkEvent,
    SelectSpeakerEvent,
)

from huddle.models.streaming import STREAM_RESET
from huddle.secrets import redact
from huddle.teams.base import RunResult
from huddle.teams.managed_chat import Event
from huddle.teams.results import MessageRecord

TeamEventKind = Literal[
    "speaker", "text_delta", "text_reset", "message", "plan", "tool_calls", "usage", "approval", "result"
]


@dataclass(frozen=True)
class TeamEvent:
    """One fact about a run, in the shape every protocol maps from.

    - ``speaker``: the manager chose `source`; `data` has ``policy`` and ``reason`` when it said why.
    - ``text_delta`` / ``text_reset``: the answer being written by `source` (a reset: a retry starts it again).
    - ``message``: a member's message (`text`); `data["internal"]` marks notes for the trace, not the user.
    - ``plan``: the planner's plan (`text`), `data["steps"]` the steps as data when the team has one.
    - ``tool_calls``: `data["calls"]`, each ``{"tool", "args", "ok"}``, and `text` the results as the executor wrote.
    - ``usage``: the run's meter so far (`data`: calls, tokens, cost_usd, and the budget's max_usd when set).
    - ``approval``: the run paused for a person's yes; `data["pending"]` the waiting calls (`PendingCall` as JSON:
      id, tool, args, agent, step_id, reason, requested), just before the ``result`` (``awaiting_approval``).
    - ``result``: the run ended; `data` is the `RunResult` as JSON.
    """

    kind: TeamEventKind
    source: str = ""
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The event as the ``huddle`` extension sends it (a JSON object standard clients ignore)."""
        body: dict[str, Any] = {"kind": self.kind, "source": self.source}
        if self.text:
            body["text"] = self.text
        if self.data:
            body["data"] = self.data
        return body


def describe(item: Event | RunResult | MessageRecord) -> TeamEvent | None:
    """The `TeamEvent` for one item of a run's stream; None for events no client needs (autogen's internals). A
    `MessageRecord` (a message as a `RunResult` keeps it: a run on the Temporal engine returns them whole) reads as
    the message it records."""
    if isinstance(item, MessageRecord):
        return _message(item.source, item.content, item.metadata)
    if isinstance(item, RunResult):
        return TeamEvent("result", item.team, item.answer, item.model_dump(mode="json"))
    if isinstance(item, ModelClientStreamingChunkEvent):
        if item.content == STREAM_RESET:
            return TeamEvent("text_reset", item.source)
        return TeamEvent("text_delta", item.source, redact(item.content))
    if isinstance(item, SelectSpeakerEvent):
        why: dict[str, Any] = {key: item.metadata[key] for key in ("policy", "reason") if key in item.metadata}
        return TeamEvent("speaker", ", ".join(item.content), data=why)
    if isinstance(item, BaseChatMessage):
        return _message(item.source, item.to_text(), item.metadata)
    return None  # autogen's other events (tool call requests, thoughts, memory queries): told by the messages


def _message(source: str, content: str, metadata: Mapping[str, str]) -> TeamEvent:
    text = redact(content)
    kind = metadata.get("kind")
    internal = metadata.get("internal") == "true"
    if kind == "plan":
        return TeamEvent("plan", source, text, {"internal": internal} if internal else {})
    if kind == "tool_result":
        try:
            calls = json.loads(metadata.get("calls", "[]"))
        except json.JSONDecodeError:
            calls = []
        return TeamEvent("tool_calls", source, text, {"calls": calls})
    data: dict[str, Any] = {"internal": True} if internal else {}
    if kind:
        data["kind"] = kind
    return TeamEvent("message", source, text, data)
