"""What a tool call comes back as: the errors a tool raises, `ToolResult`, and the shaping of what a model reads.

A tool's output flows into transcripts, traces and the ledger, so everything here passes through
`huddle.secrets.redact`, and results are cut to a token budget so one call cannot blow the context window.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_core import to_jsonable_python

from huddle.errors import HuddleError
from huddle.models.tokens import encoding_for
from huddle.secrets import redact

ErrorKind = Literal["invalid_arguments", "timeout", "exception"]

# Tool output is counted with cl100k_base whatever model reads it: a stable, model-independent budget.
_TOKEN_MODEL = "gpt-4"


class ToolDefinitionError(HuddleError):
    """A function cannot become a tool (bad name, missing hints or description, invalid option); says how to fix it."""

    exit_code = 2


class ToolArgumentsError(HuddleError):
    """A tool call's arguments are invalid; the message is one line naming the tool, the field and what was expected.

    The message is written for a model to read and correct its call, so it never spans lines or dumps a traceback.
    """

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(redact(" ".join(message.split())))
        self.tool = tool


class UnknownToolError(HuddleError, KeyError):
    """A tool name is not in the registry; a `KeyError` too, so mapping-style callers can catch it as one."""

    def __str__(self) -> str:
        # KeyError would repr() the message (adding quotes); show it as written.
        return str(self.args[0]) if self.args else ""


class ToolResult(BaseModel):
    """The outcome of one tool call, success or failure; `content` is what the model is shown.

    On failure `content` is a JSON object ``{"error": <kind>, "message": ...}``, so a model can tell a retryable
    timeout from its own bad arguments; `error` and `error_kind` carry the same for code.
    """

    tool: str
    ok: bool
    content: str
    error: str | None = None
    error_kind: ErrorKind | None = None
    # 0 when the function was never called (invalid arguments).
    attempts: int = 0
    latency_s: float = 0.0
    args: dict[str, Any] = Field(default_factory=dict)
    truncated: bool = False


class ToolCallError(Exception):
    """Raised by the autogen adapter for a failed call, so autogen marks the result ``is_error``.

    Its message is the result's JSON `content`, which is what autogen shows the model.
    """

    def __init__(self, result: ToolResult) -> None:
        super().__init__(result.content)
        self.result = result


def redact_value(value: Any) -> Any:
    """`value` (JSON-like) with every string redacted, so logged and stored arguments never carry a key."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def raw_args(args: Mapping[str, Any] | str | BaseModel) -> dict[str, Any]:
    """Arguments that failed validation, kept (redacted) on the result for debugging when they are a JSON object."""
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return {}
    if isinstance(args, BaseModel):
        args = args.model_dump(mode="json")
    return redact_value(args) if isinstance(args, Mapping) else {}


def to_text(value: Any) -> str:
    """A tool's return value as the text a model reads: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable_python(value, fallback=str), ensure_ascii=False)


def truncate_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """`text` cut to `max_tokens` cl100k tokens plus a note saying how much was dropped; and whether it was cut."""
    # A token is at least one byte, so text this short cannot exceed the limit: skip the tokenizer.
    if len(text.encode("utf-8")) <= max_tokens:
        return text, False
    encoding = encoding_for(_TOKEN_MODEL)
    tokens = encoding.encode(text, disallowed_special=())
    if len(tokens) <= max_tokens:
        return text, False
    # A cut inside a multi-byte character decodes to U+FFFD; drop it rather than show the model garbage.
    head = encoding.decode(tokens[:max_tokens]).rstrip("\ufffd")
    return f"{head}… [truncated: {len(tokens)} tokens, showing {max_tokens}]", True
