"""What the scripted model answers: a `Reply` (content and/or `ToolCall` s, the usage to report, a delay).

A test writes replies into `huddle.testing.Rule` s; the server sends them as the OpenAI API would, streamed or not.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt


class ToolCall(BaseModel):
    """One function call the scripted model asks for."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    """A dict is sent as JSON; a str is sent verbatim, so tests can script malformed JSON on purpose."""
    id: str | None = None
    """None: the server generates ``call_<n>``, unique for the server's lifetime."""

    def arguments_json(self) -> str:
        """The ``function.arguments`` string as sent on the wire."""
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


class Reply(BaseModel):
    """What the scripted model answers: content and/or tool calls, with the usage to report."""

    model_config = ConfigDict(extra="forbid")

    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: tuple[NonNegativeInt, NonNegativeInt] | None = None
    """(prompt, completion) tokens to report; None: count them with tiktoken (deterministic)."""
    cached_tokens: NonNegativeInt | None = None
    """Prompt tokens to report as read from the provider's prompt cache (``prompt_tokens_details.cached_tokens``, at
    most the prompt tokens); None: 0, or with ``ScriptedServer(prompt_cache=True)`` the prefix it shares with an
    earlier request."""
    reasoning_tokens: NonNegativeInt = 0
    """Reasoning tokens to report (``completion_tokens_details.reasoning_tokens``); like OpenAI, they are part of the
    completion tokens: added to the counted ones when ``usage`` is None, inside the scripted ones otherwise."""
    include_usage: bool = True
    """False omits ``usage`` entirely (also from streams), so clients must fall back to estimating."""
    finish_reason: str | None = None
    """None: ``tool_calls`` when the reply has tool calls, else ``stop``."""
    delay_s: float = Field(default=0.0, ge=0.0)
    """Seconds to wait before answering, e.g. to prove that requests run concurrently."""

    @property
    def effective_finish_reason(self) -> str:
        """The finish_reason sent on the wire."""
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"
