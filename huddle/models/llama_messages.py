"""Autogen messages as llama-cpp chat messages, and llama-cpp's replies back as autogen's types.

SmolLM2 has no tool-call format, so tools are never sent to it (``function_calling`` is False in its `model_info`);
tool calls and results already in a history are rendered as plain text the GGUF's chat template can hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from autogen_core import FunctionCall, Image
from autogen_core.models import (
    AssistantMessage,
    FinishReasons,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from pydantic import BaseModel

if TYPE_CHECKING:
    from llama_cpp.llama_types import ChatCompletionRequestResponseFormat

__all__ = ["ChatMessage", "finish_reason", "response_format", "to_llama_messages"]

ChatMessage = dict[str, str]
"""A llama-cpp chat message: ``{"role": ..., "content": ...}``."""


def _message_text(message: UserMessage) -> str:
    """A user message's text; images are refused because the model has no vision."""
    if isinstance(message.content, str):
        return message.content
    parts: list[str] = []
    for part in message.content:
        if isinstance(part, Image):
            raise ValueError(
                f"the local model cannot read images (vision is False); message from {message.source!r} has one"
            )
        parts.append(part)
    return "\n".join(parts)


def _render_call(call: FunctionCall) -> str:
    return f"called {call.name}({call.arguments})"


def to_llama_messages(messages: Sequence[LLMMessage]) -> list[ChatMessage]:
    """Convert autogen messages to llama-cpp chat messages that the GGUF's chat template can render.

    The template knows only plain ``role``/``content`` turns, so tool calls become assistant text
    (``called name(args)``) and tool results become a user turn (``Tool result (name): …``): the model still sees what
    happened, and a conversation with a tool round trip in it no longer crashes. Leading system messages are merged
    into one, since SmolLM2 was trained with a single system turn.
    """
    converted: list[ChatMessage] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            if converted and all(m["role"] == "system" for m in converted):
                converted[0]["content"] += "\n\n" + message.content
            else:
                converted.append({"role": "system", "content": message.content})
        elif isinstance(message, UserMessage):
            converted.append({"role": "user", "content": _message_text(message)})
        elif isinstance(message, AssistantMessage):
            if isinstance(message.content, str):
                text = message.content
            else:
                text = "\n".join(_render_call(call) for call in message.content)
                if message.thought:
                    text = f"{message.thought}\n{text}"
            converted.append({"role": "assistant", "content": text})
        elif isinstance(message, FunctionExecutionResultMessage):
            lines = [
                f"Tool {'error' if result.is_error else 'result'} ({result.name}): {result.content}"
                for result in message.content
            ]
            converted.append({"role": "user", "content": "\n".join(lines)})
        else:  # pragma: no cover - LLMMessage is a closed union; this guards against a future autogen adding one
            raise ValueError(f"unsupported message type for the local model: {type(message).__name__}")
    return converted


def finish_reason(reason: str | None) -> FinishReasons:
    """Map llama-cpp's OpenAI-style finish reasons onto autogen's."""
    if reason in ("stop", "length", "content_filter"):
        return cast(FinishReasons, reason)
    if reason in ("tool_calls", "function_call"):
        return "function_calls"
    return "unknown"


def response_format(json_output: bool | type[BaseModel] | None) -> ChatCompletionRequestResponseFormat | None:
    """JSON mode (any JSON object) or, for a pydantic model, a grammar generated from its JSON schema.

    Either way llama.cpp constrains sampling with a grammar, so even a 135M model emits syntactically valid JSON and,
    with a schema, the right keys, enum values and bounded lengths (``$defs``, nested models and ``maxLength`` /
    ``maxItems`` all translate). The grammar cannot make the model *stop*, though: free-form JSON mode, or a schema
    with unbounded strings or lists, can run into ``max_tokens`` and come back truncated (finish_reason "length").
    """
    if json_output is None or json_output is False:
        return None
    if json_output is True:
        return {"type": "json_object"}
    if isinstance(json_output, type) and issubclass(json_output, BaseModel):
        return {"type": "json_object", "schema": json_output.model_json_schema()}
    raise TypeError(f"json_output must be a bool or a pydantic BaseModel subclass, not {json_output!r}")
