"""How many tokens a call took: the server's ``usage`` when it can be true, else a count made here.

Why a module of its own: a server reporting negative or absurd counts let calls through a budget and put a refund of
$16,000 in the ledger, so the meter checks every reported count against bounds taken from what was sent and what came
back, and counts the tokens itself (marked as an estimate) when a server sent none or an impossible one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence

from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage, UserMessage
from autogen_core.tools import Tool, ToolSchema

from huddle.config.settings import ModelProfile

_BYTES_PER_CHAR = 4  # UTF-8's most; a BPE token covers at least one byte, so 4 x chars bounds the tokens from above
_PER_MESSAGE_TOKENS = 8  # role and separator tokens a chat template adds per message, generously
_USAGE_SLACK_TOKENS = 1024  # a server may add a chat template, tool rendering, its own system prompt


def plausible(
    profile: ModelProfile,
    prompt: int,
    completion: int,
    messages: Sequence[LLMMessage],
    tools: Sequence[Tool | ToolSchema],
    result: CreateResult,
) -> bool:
    """Whether a server's usage can be true: not negative, the prompt no more than what was sent can take, the
    completion no more than what came back can take or the profile lets the model write (reasoning tokens).

    The bounds come from lengths alone (no tokenizer on every call), so they are loose: they catch the impossible,
    not a server counting a little high.
    """
    if prompt < 0 or completion < 0:
        return False
    tools_chars = sum(len(json.dumps(getattr(tool, "schema", tool), default=str)) for tool in tools)
    sent = upper_bound_tokens(messages) + tools_chars * _BYTES_PER_CHAR + _USAGE_SLACK_TOKENS
    received = len(result_text(result)) * _BYTES_PER_CHAR + _USAGE_SLACK_TOKENS
    allowed = max(received, profile.max_tokens or 0, profile.context_window or 0)
    return prompt <= sent and completion <= allowed


def estimated_usage(
    inner: ChatCompletionClient,
    count_text: Callable[[str], int],
    messages: Sequence[LLMMessage],
    tools: Sequence[Tool | ToolSchema],
    result: CreateResult,
) -> tuple[int, int]:
    """Prompt and completion tokens counted here, for a call whose server sent no usage or an impossible one."""
    return inner.count_tokens(messages, tools=tools), count_text(result_text(result))


def upper_bound_tokens(messages: Sequence[LLMMessage]) -> int:
    """At least as many tokens as these messages can take, from their length alone (no tokenizer).

    A message with an image has no such bound (its tokens depend on the picture), so it is counted as unbounded.
    """
    total = 0
    for message in messages:
        if isinstance(message, UserMessage) and not isinstance(message.content, str):
            return sys.maxsize
        total += len(str(message.content)) * _BYTES_PER_CHAR + _PER_MESSAGE_TOKENS
    return total


def result_text(result: CreateResult) -> str:
    """What the model generated, as text, for estimating completion tokens."""
    if isinstance(result.content, str):
        return (result.thought or "") + result.content
    calls = [{"name": call.name, "arguments": call.arguments} for call in result.content]
    return (result.thought or "") + json.dumps(calls)
