"""When a model call fails: which failures are worth retrying, and how long to wait before the next attempt.

The metering client (`huddle.models.metering`) retries here rather than inside the openai SDK, so that every attempt
is a ledger row and a trace span, the wait honours the server's ``Retry-After``, and the total time spent retrying is
bounded. After the last attempt the profile's ``fallback`` chain takes over.
"""

from __future__ import annotations

import random

import httpx
import openai
from pydantic import BaseModel, Field

_RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class RetryPolicy(BaseModel):
    """Exponential backoff with jitter, capped per wait and in total."""

    max_retries: int = Field(2, ge=0, le=10)
    base_delay_s: float = Field(0.5, gt=0)
    max_delay_s: float = Field(8.0, gt=0)
    max_total_s: float = Field(30.0, gt=0, description="Stop retrying once this much time has gone by.")
    jitter: float = Field(0.25, ge=0, le=1)

    def delay(self, attempt: int, exc: BaseException, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt` (1-based): the server's Retry-After if it gave one."""
        hinted = retry_after(exc)
        if hinted is not None:
            return min(hinted, self.max_delay_s)
        base = min(self.base_delay_s * 2.0 ** (attempt - 1), self.max_delay_s)
        return base * (1 + self.jitter * (2 * rng.random() - 1))


class MalformedReply(Exception):
    """The server answered, but not in a form the request allows (e.g. a tool call when no tools were offered)."""


def is_retryable(exc: BaseException) -> bool:
    """Rate limits, server errors, timeouts, broken connections or streams, malformed replies; not bad requests or
    auth errors."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRYABLE_STATUS
    return isinstance(exc, openai.APIConnectionError | httpx.TransportError | TimeoutError | MalformedReply)


def retry_after(exc: BaseException) -> float | None:
    """The wait a 429/503 asked for (``retry-after-ms`` or ``retry-after`` in seconds), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None
