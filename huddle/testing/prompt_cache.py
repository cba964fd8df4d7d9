"""A provider's prompt cache, as the scripted server plays it: what part of a request's prompt it would have cached.

OpenAI's documented rule (https://platform.openai.com/docs/guides/prompt-caching): a prompt's longest prefix that an
earlier request to the same model already sent is read from the cache, counted only from 1,024 tokens on and in steps
of 128 tokens. So a client whose prompts are prefix-stable (system prompt and static context first, the conversation
after) gets cache hits turn after turn, and one that puts a timestamp at the top gets none: tests and
``bench/prompt_cache.py`` see the difference in ``prompt_tokens_details.cached_tokens``.

The prompt is tokenized as the provider reads it: the tools offered, then each message's role and text in order.
"""

from __future__ import annotations

import json
import threading

from huddle.models.tokens import encoding_for
from huddle.testing.rules import RecordedRequest, text_of

MIN_CACHED_TOKENS = 1024
CACHE_STEP_TOKENS = 128


class PromptCache:
    """The prompts seen so far, per model; `read` answers how many tokens of a new one were cached."""

    def __init__(self) -> None:
        self._seen: dict[str, list[list[int]]] = {}
        self._lock = threading.Lock()

    def read(self, record: RecordedRequest) -> int:
        """The cached tokens of `record` 's prompt (0 below 1,024 shared tokens), remembering it for later requests."""
        tokens = prompt_tokens(record)
        with self._lock:
            earlier = self._seen.setdefault(record.model, [])
            shared = max((_common_prefix(tokens, seen) for seen in earlier), default=0)
            earlier.append(tokens)
        if shared < MIN_CACHED_TOKENS:
            return 0
        return shared - shared % CACHE_STEP_TOKENS

    def clear(self) -> None:
        """Forget every prompt (a cold cache)."""
        with self._lock:
            self._seen.clear()


def prompt_tokens(record: RecordedRequest) -> list[int]:
    """The request's prompt as tokens: the tools offered first, then each message's role, text and tool calls."""
    parts = [json.dumps((record.body or {}).get("tools") or [], sort_keys=True)]
    for message in record.messages:
        calls = json.dumps(message.get("tool_calls") or [], sort_keys=True)
        parts.append(f"{message.get('role')}\n{text_of(message.get('content'))}\n{calls}")
    return encoding_for(record.model).encode("\n".join(parts), disallowed_special=())


def _common_prefix(left: list[int], right: list[int]) -> int:
    """How many leading tokens the two prompts share."""
    shared = 0
    for a, b in zip(left, right, strict=False):
        if a != b:
            break
        shared += 1
    return shared
