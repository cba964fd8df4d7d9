"""The parts of a server's ``usage`` autogen drops: cached prompt tokens and reasoning tokens, read off the openai SDK.

Why: autogen's ``OpenAIChatCompletionClient`` keeps only ``prompt_tokens`` and ``completion_tokens``, so a prompt
the provider read from its cache (billed at a fraction of the input rate) looked like a full-price one, and
reasoning tokens were invisible. Here the SDK's ``chat.completions.create`` (a reply, or the stream's final usage
chunk) and ``beta.chat.completions.parse`` are wrapped so the details land in the `Details` the meter opened for
the attempt (`collecting`).

How the box reaches the call: autogen sends each request from ``asyncio.ensure_future``, which copies the context
when the task is made, so the box set by `collecting` around the meter's await is the one the request sees; a stream
keeps the box it was created under for all of its chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass
class Details:
    """Cached prompt tokens and reasoning tokens as the server reported them; None: it did not say."""

    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    def note(self, usage: Any) -> None:
        """Take the details from an SDK ``CompletionUsage`` (or None: a chunk without usage leaves them)."""
        if usage is None:
            return
        self.cached_tokens = _count(getattr(usage, "prompt_tokens_details", None), "cached_tokens")
        self.reasoning_tokens = _count(getattr(usage, "completion_tokens_details", None), "reasoning_tokens")


_box: ContextVar[Details | None] = ContextVar("huddle_usage_details", default=None)


@contextmanager
def collecting(details: Details) -> Iterator[Details]:
    """Let the requests started inside this block (and the streams they open) report their details to `details`."""
    outer, token = _box.get(), _box.set(details)
    try:
        yield details
    finally:
        _box.reset(token)
        if outer is not None:  # an enclosing collector (a remote worker's activity) hears them too
            outer.cached_tokens = outer.cached_tokens if details.cached_tokens is None else details.cached_tokens
            outer.reasoning_tokens = (
                outer.reasoning_tokens if details.reasoning_tokens is None else details.reasoning_tokens
            )


def report(cached_tokens: int | None, reasoning_tokens: int | None) -> None:
    """Details that reached us another way than an SDK response (a Temporal activity's reply), for the collector."""
    details = _box.get()
    if details is not None:
        details.cached_tokens, details.reasoning_tokens = cached_tokens, reasoning_tokens


class DetailedStream:
    """An SDK ``AsyncStream`` passed on chunk by chunk, noting the usage chunk's details; the rest is the SDK's."""

    def __init__(self, stream: Any, details: Details | None) -> None:
        self._stream = stream
        self._details = details

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        chunk = await self._stream.__anext__()
        if self._details is not None:
            self._details.note(getattr(chunk, "usage", None))
        return chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class DetailedCompletions:
    """Stands in for an ``AsyncOpenAI`` client's ``chat.completions`` or ``beta.chat.completions``: ``create`` and
    ``parse`` note the usage details of what they return; everything else is the SDK's own."""

    def __init__(self, completions: Any) -> None:
        self._completions = completions

    async def create(self, **kwargs: Any) -> Any:
        details = _box.get()
        result = await self._completions.create(**kwargs)
        if kwargs.get("stream") is True:
            return DetailedStream(result, details)
        if details is not None:
            details.note(getattr(result, "usage", None))
        return result

    async def parse(self, **kwargs: Any) -> Any:
        details = _box.get()
        result = await self._completions.parse(**kwargs)
        if details is not None:
            details.note(getattr(result, "usage", None))
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._completions, name)


def install(client: Any) -> None:
    """Route `client` 's (an ``AsyncOpenAI``) chat completions, plain and beta, through `DetailedCompletions`."""
    client.chat.completions = DetailedCompletions(client.chat.completions)
    client.beta.chat.completions = DetailedCompletions(client.beta.chat.completions)


def _count(details: Any, name: str) -> int | None:
    """A non-negative count from a details object; None when it is absent or not a count."""
    value = getattr(details, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
