"""The script a `huddle.testing.ScriptedServer` answers from: `Rule` s matched in order against each
`RecordedRequest` (first match wins), each with a reply (fixed, a list, or computed from the request) and/or a fault.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeAlias, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from huddle.testing.faults import Fault
from huddle.testing.replies import Reply


class RecordedRequest(BaseModel):
    """One HTTP request the server received and how it answered; credentials are redacted."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    """Lower-cased names; credential headers (``authorization``, ...) hold ``***``."""
    agent: str | None = None
    """The ``X-Huddle-Agent`` header, if any."""
    stream: bool = False
    index: int = -1
    """0-based index among chat-completion requests; -1 for anything else (models list, 404, invalid JSON)."""
    status: int = 0
    """HTTP status sent; 0 while not (or never) answered, e.g. a timeout fault cut short by ``stop()``."""
    fault: str | None = None
    usage: tuple[int, int] | None = None
    """(prompt, completion) usage the server reported; None when it reported none."""
    cached_tokens: int | None = None
    """The ``prompt_tokens_details.cached_tokens`` the server reported with that usage; None when it reported none."""
    reply: Reply | None = None
    """The reply sent (or partly sent), with generated tool-call ids filled in."""
    rule: int | None = None
    """Position in ``ScriptedServer.rules`` of the rule that answered; None for the fallback."""
    error: str | None = None
    """Why the server answered with an error of its own (e.g. a reply callable raised)."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's ``messages`` (empty for non-chat requests)."""
        messages = (self.body or {}).get("messages")
        return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []

    @property
    def system_text(self) -> str:
        """All system (and ``developer``) messages' text, newline-joined: what `Rule.system` searches."""
        return "\n".join(text_of(m.get("content")) for m in self.messages if m.get("role") in ("system", "developer"))

    @property
    def last_role(self) -> str | None:
        """Role of the last message (``tool`` right after a tool result)."""
        return str(self.messages[-1].get("role")) if self.messages else None

    @property
    def last_text(self) -> str:
        """Text of the last message (for a tool result, its content): what `Rule.last` searches."""
        return text_of(self.messages[-1].get("content")) if self.messages else ""

    @property
    def model(self) -> str:
        """The requested model name (``scripted`` if the request named none)."""
        model = (self.body or {}).get("model")
        return model if isinstance(model, str) and model else "scripted"

    @property
    def has_tools(self) -> bool:
        """Whether the request offered tools."""
        return bool((self.body or {}).get("tools"))

    @property
    def response_format(self) -> dict[str, Any] | None:
        """The request's ``response_format`` (json_object / json_schema), if any; replies are sent as scripted."""
        value = (self.body or {}).get("response_format")
        return value if isinstance(value, dict) else None


ReplyLike: TypeAlias = Reply | Callable[[RecordedRequest], Reply]
"""A fixed reply, or a function computing one from the request (dynamic replies)."""


class Rule(BaseModel):
    """When a chat-completion request matches all given conditions, answer with `reply` (and/or `fault`).

    Conditions left as None are not checked. ``system`` and ``last`` are regular expressions (``re.search``).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    system: str | None = None
    last: str | None = None
    agent: str | None = None
    call_index: int | None = Field(default=None, ge=0)
    has_tools: bool | None = None
    last_role: str | None = None
    reply: ReplyLike | list[ReplyLike] | None = None
    """A list gives successive matches successive replies (the last repeats); None uses the server's fallback."""
    fault: Fault | None = None
    times: int | None = Field(default=None, ge=1)
    """Stop matching after this many uses (e.g. a 429 once, then let the next rule answer the retry)."""

    @field_validator("system", "last")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        """Fail when the script is written, not with a confusing error in a server thread later."""
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
        return value

    @field_validator("reply", mode="before")
    @classmethod
    def _coerce_reply(cls, value: Any) -> Any:
        """Accept a bare string as shorthand for ``Reply(content=...)``; refuse an empty list (it could never reply)."""
        if isinstance(value, str):
            return Reply(content=value)
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("reply list must not be empty")
            return [Reply(content=item) if isinstance(item, str) else item for item in value]
        return value

    def matches(self, request: RecordedRequest) -> bool:
        """Whether every given condition holds for `request` (``times`` is checked by the server)."""
        if self.call_index is not None and request.index != self.call_index:
            return False
        if self.agent is not None and request.agent != self.agent:
            return False
        if self.has_tools is not None and request.has_tools != self.has_tools:
            return False
        if self.last_role is not None and request.last_role != self.last_role:
            return False
        if self.system is not None and re.search(self.system, request.system_text) is None:
            return False
        return self.last is None or re.search(self.last, request.last_text) is not None

    def reply_for(self, use: int) -> ReplyLike | None:
        """The reply for this rule's `use`-th match (0-based); the last of a list repeats."""
        if isinstance(self.reply, list):
            return self.reply[min(use, len(self.reply) - 1)]
        return self.reply


def text_of(content: Any) -> str:
    """Plain text of a message ``content``: a string, or the text parts of a multimodal list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return json.dumps(content, sort_keys=True)


def coerce_reply_like(value: Any) -> ReplyLike:
    """A `Reply` (or callable) from what a user may pass: Reply, str, dict or callable."""
    if isinstance(value, Reply):
        return value
    if isinstance(value, str):
        return Reply(content=value)
    if isinstance(value, dict):
        return Reply.model_validate(value)
    if callable(value):
        return cast(Callable[[RecordedRequest], Reply], value)
    raise TypeError(f"expected a Reply, str, dict or callable, got {type(value).__name__}")
