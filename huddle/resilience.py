"""The one retry helper, for model calls and tools: which failures are worth retrying, and how long to wait.

`retrying` builds a tenacity retrier from a `RetryPolicy`: exponential backoff with jitter, the server's
``Retry-After`` when it sent one, at most ``max_retries`` retries and never past ``max_total_s`` in all (a retry whose
wait would cross it is not made). The metering client (`huddle.models.metering`) retries here rather than inside the
openai SDK, so that every attempt is a ledger row and a trace span; after the last attempt the profile's
``fallback`` chain takes over. Tools (`huddle.tools.definition`) retry their own exceptions and timeouts here too.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import httpx
import openai
from pydantic import BaseModel, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

_RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
# Jitter only spreads retries apart; it needs no seed and no secrecy.
_JITTER = random.Random()
# More retries than this only hide a broken server or tool for longer.
MAX_RETRIES = 10

RetryHook = Callable[[int, BaseException, float], None]
"""Told of each retry before its wait: the number of the attempt that failed, its exception, the wait in seconds."""


class RetryPolicy(BaseModel):
    """Exponential backoff with jitter, capped per wait and in total."""

    max_retries: int = Field(2, ge=0, le=MAX_RETRIES)
    base_delay_s: float = Field(0.5, gt=0)
    max_delay_s: float = Field(8.0, gt=0)
    max_total_s: float = Field(30.0, gt=0, description="Stop retrying once this much time has gone by.")
    jitter: float = Field(0.25, ge=0, le=1)

    def delay(self, attempt: int, exc: BaseException | None, rng: random.Random) -> float:
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


def retry_after(exc: BaseException | None) -> float | None:
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


def retrying(
    policy: RetryPolicy,
    *,
    retry_on: Callable[[BaseException], bool] = is_retryable,
    on_retry: RetryHook | None = None,
) -> AsyncRetrying:
    """A fresh retrier for one call under `policy`: ``await retrying(p)(fn, *args)``, or for a stream,
    ``async for attempt in retrying(p): with attempt: ...``.

    A failure `retry_on` rejects is raised at once; after the last attempt the last failure is raised as it was (not
    wrapped in tenacity's ``RetryError``), so callers catch the same exceptions with or without retries.
    """

    def wait(state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome is not None else None
        return policy.delay(state.attempt_number, failure, _JITTER)

    def stop(state: RetryCallState) -> bool:
        spent = state.seconds_since_start or 0.0
        return state.attempt_number > policy.max_retries or spent + state.upcoming_sleep > policy.max_total_s

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and (failure := state.outcome.exception()):
            on_retry(state.attempt_number, failure, state.upcoming_sleep)

    return AsyncRetrying(
        stop=stop, wait=wait, retry=retry_if_exception(retry_on), before_sleep=before_sleep, reraise=True
    )
