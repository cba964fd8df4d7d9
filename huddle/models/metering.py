"""The one metering layer: a ``ChatCompletionClient`` that records every call of the client it wraps in the ledger.

Why a wrapper and not autogen's own counters: autogen's per-client ``total_usage`` mixes all agents and runs, misses
nothing only if every caller shares one client, and cannot tell a server-reported count from a missing one. Here each
agent gets its own metered client (`huddle.models.factory.build_client`), so every row carries the agent, run and
session, and tokens are the server's ``usage`` exactly when it sent one, a tokenizer estimate (marked as such)
when it did not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from huddle import tracing
from huddle.config.settings import ModelProfile
from huddle.errors import HuddleError
from huddle.models import usage_details, usage_reading
from huddle.models.delegating import DelegatingClient
from huddle.models.masking import masked
from huddle.models.pricing import price_call
from huddle.models.streaming import Delivery
from huddle.resilience import MalformedReply, RetryPolicy, retrying
from huddle.secrets import redact
from huddle.usage import TokenSource, UsageLedger, UsageRecord, current_scope
from huddle.usage.budget import BudgetExhausted, Estimate, Governor, trim_messages

TextCounter = Callable[[str], int]
JsonOutput = bool | type[BaseModel] | None
ToolChoice = Tool | Literal["auto", "required", "none"]
_T = TypeVar("_T")
_KEEP_LAST_MESSAGES = 2


class ContextOverflow(HuddleError):
    """The prompt cannot fit the profile's context window even trimmed: the call is refused before it is made."""


class MeteredClient(DelegatingClient):
    """Delegates to `inner` and appends one `UsageRecord` per call (including failed and cancelled ones)."""

    def __init__(
        self,
        inner: ChatCompletionClient,
        *,
        ledger: UsageLedger,
        profile: ModelProfile,
        count_text: TextCounter,
        agent: str = "anonymous",
        governor: Governor | None = None,
        fallback: MeteredClient | None = None,
    ) -> None:
        super().__init__(inner)
        self.ledger = ledger
        self.profile = profile
        self.agent = agent
        self.governor = governor
        self.fallback = fallback
        self._count_text = count_text

    async def close(self) -> None:
        """Close this profile's client and the fallback chain's: each profile has an HTTP client (and cache) of its
        own, and the fallback's were never closed."""
        try:
            await self.inner.close()
        finally:
            if self.fallback is not None:
                await self.fallback.close()

    def count_text(self, text: str) -> int:
        """Tokens in `text` as this model counts them (tiktoken, or the local model's own tokenizer)."""
        return self._count_text(text)

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: ToolChoice = "auto",
        json_output: JsonOutput = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        messages = self._fit_window(messages, tools, extra_create_args)
        messages, downgrade, admitted = self._govern(messages, tools, extra_create_args)
        args = _call_args(tools, tool_choice, json_output, extra_create_args, cancellation_token)
        try:
            if downgrade is not None:
                return await downgrade.create(messages, **args)  # recorded under the fallback's profile
            try:
                return await retrying(self._retry_policy())(self._create_once, messages, args)
            except Exception as exc:
                if self.fallback is None or isinstance(exc, BudgetExhausted):
                    raise
                return await self.fallback.create(messages, **args)  # the next profile in the chain
        finally:
            self._release(admitted)

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: ToolChoice = "auto",
        json_output: JsonOutput = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        messages = self._fit_window(messages, tools, extra_create_args)
        messages, downgrade, admitted = self._govern(messages, tools, extra_create_args)
        args = _call_args(tools, tool_choice, json_output, extra_create_args, cancellation_token)
        delivery = Delivery()  # a retry or the fallback starts its text again: each character is passed on once
        try:
            if downgrade is not None:
                async for item in downgrade.create_stream(messages, **args):  # recorded under the fallback's profile
                    yield item
                return
            try:
                async for attempt in retrying(self._retry_policy()):
                    with attempt:
                        # A stream cut part-way is retried whole: the final CreateResult is the retry's.
                        delivery.restart()
                        async for item in self._stream_once(messages, args):
                            for chunk in _delivered(delivery, item):
                                yield chunk
            except Exception as exc:
                if self.fallback is None or isinstance(exc, BudgetExhausted):
                    raise
                delivery.restart()
                async for item in self.fallback.create_stream(messages, **args):
                    for chunk in _delivered(delivery, item):
                        yield chunk
        finally:
            self._release(admitted)

    async def _create_once(self, messages: Sequence[LLMMessage], args: dict[str, Any]) -> CreateResult:
        """One attempt, recorded in the ledger whether it succeeds or fails."""
        row, started, details = self._begin(streamed=False), time.perf_counter(), usage_details.Details()
        try:
            with usage_details.collecting(details):
                result = await self._by(self._deadline(), self.inner.create(messages, **args))
        except BaseException as exc:
            self._record_failure(row, exc, started, streamed=False, sent=(messages, args["tools"]))
            raise
        return self._record(row, result, details, messages, args["tools"], started, streamed=False)

    async def _stream_once(
        self, messages: Sequence[LLMMessage], args: dict[str, Any]
    ) -> AsyncGenerator[str | CreateResult, None]:
        """One streamed attempt, recorded in the ledger whether it succeeds or fails.

        The final `CreateResult` is yielded only after it is metered and checked, so a malformed reply raises before
        the caller takes it as the answer.
        """
        row, started, details = self._begin(streamed=True), time.perf_counter(), usage_details.Details()
        result: CreateResult | None = None
        received: list[str] = []
        deadline = self._deadline()
        stream = self.inner.create_stream(messages, **args)
        try:
            while True:
                try:
                    with usage_details.collecting(details):  # set per step: never left set while the caller runs
                        item = await self._by(deadline, anext(stream))
                except StopAsyncIteration:
                    break
                if isinstance(item, CreateResult):
                    result = item
                else:
                    received.append(item)
                    yield item
        except BaseException as exc:
            self._record_failure(
                row, exc, started, streamed=True, sent=(messages, args["tools"]), received="".join(received)
            )
            raise
        finally:
            await stream.aclose()
        if result is None:
            failure = RuntimeError("stream ended without a final result")
            self._record_failure(row, failure, started, streamed=True)
            raise failure
        yield self._record(row, result, details, messages, args["tools"], started, streamed=True)

    def _deadline(self) -> float:
        """When an attempt starting now must be over: ``timeout_s`` bounds the whole call, not each read.

        The HTTP client's timeout is per read, so a server trickling one byte a second kept a call alive past 200 s.
        """
        return asyncio.get_running_loop().time() + self.profile.timeout_s

    async def _by(self, deadline: float, step: Awaitable[_T]) -> _T:
        """`step` awaited until `deadline`; past it, a `TimeoutError` (retried like any timeout) that says why."""
        try:
            async with asyncio.timeout_at(deadline):
                return await step
        except TimeoutError as exc:
            if asyncio.get_running_loop().time() < deadline:
                raise  # the client's own timeout, not this deadline
            raise TimeoutError(f"no complete reply within timeout_s={self.profile.timeout_s:g}s") from exc

    def _retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.profile.max_retries)

    def _fit_window(
        self,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        extra_create_args: Mapping[str, Any],
    ) -> Sequence[LLMMessage]:
        """The messages, trimmed if needed, so that prompt + reply fit the profile's ``context_window``.

        The window is the one ``huddle models`` reports (for the embedded model, llama.cpp's ``n_ctx``). Short
        prompts pass on a bound from their length alone, so the tokenizer runs only for prompts near the window.
        A prompt that does not fit is trimmed like the budget's ``trim`` (system prompt, first user message, the
        latest messages); one that still does not fit raises `ContextOverflow` instead of a server or llama.cpp error.
        """
        window = self.profile.context_window or 0
        reply = int(extra_create_args.get("max_tokens") or self.profile.max_tokens or 0)
        room = window - reply
        if window <= 0 or (not tools and usage_reading.upper_bound_tokens(messages) <= room):
            return messages
        prompt = self.inner.count_tokens(messages, tools=tools)
        if prompt <= room:
            return messages
        trimmed: Sequence[LLMMessage] = trim_messages(messages, _KEEP_LAST_MESSAGES)  # type: ignore[assignment]
        if len(trimmed) < len(messages):
            after = self.inner.count_tokens(trimmed, tools=tools)
            if after <= room:
                tracing.event(
                    "context trim",
                    "budget",
                    agent=self.agent,
                    reason=f"prompt {prompt} -> {after} tokens",
                    window=window,
                )
                return trimmed
        raise ContextOverflow(
            f"profile {self.profile.name or self.profile.model_name!r}: the {self.agent} prompt is {prompt} tokens, "
            f"more than the context window of {window} tokens leaves after {reply} for the reply; shorten the input "
            "or use a profile with a larger context_window"
        )

    def _govern(
        self,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        extra_create_args: Mapping[str, Any],
    ) -> tuple[Sequence[LLMMessage], MeteredClient | None, Estimate | None]:
        """Ask the governor about this call: the messages to send, the fallback client if it downgrades, and the
        estimate reserved for the call (to `_release` once it is recorded).

        Raises `BudgetExhausted` when the call must not be made.
        """
        if self.governor is None or not self.governor.budget.active:
            return messages, None, None
        budget = self.governor.budget
        estimate = self._estimate(messages, tools, extra_create_args, budget.expected_completion_tokens)
        downgrade = None
        if self.governor.over_soft(self.agent, estimate):
            trimmed = trim_messages(messages, budget.keep_last_messages)
            if len(trimmed) < len(messages):
                before = estimate.prompt_tokens
                messages = trimmed  # type: ignore[assignment]
                estimate = self._estimate(messages, tools, extra_create_args, budget.expected_completion_tokens)
                after = estimate.prompt_tokens
                reason = f"over {budget.soft_fraction:.0%} of budget: prompt {before} -> {after} tokens"
                self.governor.record(self.agent, "trim", reason, estimate)
            if self.fallback is not None and self.governor.over_soft(self.agent, estimate):
                downgrade = self.fallback
                estimate = downgrade._estimate(messages, tools, extra_create_args, budget.expected_completion_tokens)
                reason = f"over {budget.soft_fraction:.0%} of budget: {self.profile.name} -> {downgrade.profile.name}"
                self.governor.record(self.agent, "downgrade", reason, estimate)
        refusal = self.governor.admit(self.agent, estimate)
        if refusal is not None:
            raise BudgetExhausted(self.governor.record(self.agent, "stop", refusal, estimate))
        return messages, downgrade, estimate

    def _release(self, admitted: Estimate | None) -> None:
        if admitted is not None and self.governor is not None:
            self.governor.release(admitted)

    def _estimate(
        self,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        extra_create_args: Mapping[str, Any],
        expected_completion: int,
    ) -> Estimate:
        """Tokens of the actual prompt, the completion this call may produce, and their price on this profile."""
        prompt = self.inner.count_tokens(messages, tools=tools)
        completion = int(extra_create_args.get("max_tokens") or self.profile.max_tokens or expected_completion)
        usd = price_call(self.profile, prompt, completion).cost_usd  # priced as the ledger will price it
        return Estimate(prompt_tokens=prompt, completion_tokens=completion, usd=usd)

    def _record(
        self,
        row: int,
        result: CreateResult,
        details: usage_details.Details,
        messages: Sequence[LLMMessage],
        tools: Sequence[Tool | ToolSchema],
        started: float,
        *,
        streamed: bool,
    ) -> CreateResult:
        """Meter a call that returned, and return it with the usage metered; a reply that cannot be right is
        metered, then raised as `MalformedReply`.

        The server's usage is taken only when it can be true: a server reporting negative or absurd counts let calls
        through a budget and put a refund of $16,000 in the ledger. Anything else is estimated with the tokenizer.
        Cached and reasoning tokens (`details`) are taken with the server's counts only, never above them.
        """
        problem = None if tools or isinstance(result.content, str) else "the model called a tool, but none was offered"
        prompt, completion = result.usage.prompt_tokens, result.usage.completion_tokens
        source: TokenSource = "server"
        cached, reasoning = details.cached_tokens or 0, details.reasoning_tokens or 0
        if result.cached:
            prompt, completion, source = 0, 0, "cache"
        elif (prompt, completion) != (0, 0) and not usage_reading.plausible(
            self.profile, prompt, completion, messages, tools, result
        ):
            tracing.event("usage rejected", "usage", agent=self.agent, reason=f"server reported {prompt}/{completion}")
            prompt, completion, source = self._estimate_usage(messages, tools, result)
            usage = RequestUsage(prompt_tokens=prompt, completion_tokens=completion)
            result = result.model_copy(update={"usage": usage})  # callers summing models_usage see it too
        elif prompt == 0 and completion == 0:
            # autogen reports 0/0 when the server sent no usage; a real request always has prompt tokens.
            prompt, completion, source = self._estimate_usage(messages, tools, result)
        if source != "server":
            cached, reasoning = 0, 0
        cached, reasoning = min(cached, prompt), min(reasoning, completion)
        priced = price_call(self.profile, prompt, completion, cached)
        self._append(
            row,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            reasoning_tokens=reasoning,
            token_source=source,
            cost_usd=priced.cost_usd,
            saved_usd=priced.saved_usd,
            price_source=priced.source,
            latency_s=time.perf_counter() - started,
            cached=result.cached,
            streamed=streamed,
            error=f"MalformedReply: {problem}" if problem else None,
        )
        if problem:
            raise MalformedReply(problem)
        return masked(result)

    def _estimate_usage(
        self, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema], result: CreateResult
    ) -> tuple[int, int, TokenSource]:
        """Prompt and completion tokens counted here, for a call whose server sent no usage or an impossible one."""
        return (*usage_reading.estimated_usage(self.inner, self._count_text, messages, tools, result), "estimate")

    def _record_failure(
        self,
        row: int,
        exc: BaseException,
        started: float,
        *,
        streamed: bool,
        sent: tuple[Sequence[LLMMessage], Sequence[Tool | ToolSchema]] | None = None,
        received: str = "",
    ) -> None:
        """Meter a call that raised: no tokens, except for a call cancelled or abandoned on its way, whose prompt was
        sent (and is billed) and whose streamed text so far was generated: those are estimated."""
        message = redact(f"{type(exc).__name__}: {exc}")[:500]
        tokens: dict[str, Any] = {"token_source": "none"}
        if sent is not None and isinstance(exc, asyncio.CancelledError | GeneratorExit):
            prompt = self.inner.count_tokens(sent[0], tools=sent[1])
            completion = self._count_text(received) if received else 0
            priced = price_call(self.profile, prompt, completion)
            tokens = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "token_source": "estimate",
                "cost_usd": priced.cost_usd,
                "price_source": priced.source,
            }
        self._append(row, **tokens, latency_s=time.perf_counter() - started, streamed=streamed, error=message)

    def _begin(self, *, streamed: bool) -> int:
        """The ledger row of an attempt about to be sent, written in flight (`UsageLedger.begin`): a process killed
        during the call leaves it there, shown as interrupted, instead of no trace of a call the server had."""
        return self.ledger.begin(self._usage(streamed=streamed, token_source="none"), key=current_scope().call_key)

    def _usage(self, **fields: Any) -> UsageRecord:
        scope = current_scope()
        return UsageRecord(
            run_id=scope.run_id,
            session_id=scope.session_id,
            agent=self.agent,
            profile=self.profile.name,
            model=self.profile.model_name,
            **fields,
        )

    def _append(self, row: int, **fields: Any) -> None:
        """Settle the attempt's row `row` with how it ended, and trace it."""
        record = self.ledger.settle(row, self._usage(**fields))
        tracing.event(
            tracing.span_name("model", record.model),
            "model",
            start=record.ts - record.latency_s,
            error=record.error,
            agent=record.agent,
            profile=record.profile,
            model=record.model,
            provider=self.profile.provider,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            cached_tokens=record.cached_tokens,
            reasoning_tokens=record.reasoning_tokens,
            token_source=record.token_source,
            cost_usd=record.cost_usd,
            cached=record.cached,
            streamed=record.streamed,
        )


def _call_args(
    tools: Sequence[Tool | ToolSchema],
    tool_choice: ToolChoice,
    json_output: JsonOutput,
    extra_create_args: Mapping[str, Any],
    cancellation_token: CancellationToken | None,
) -> dict[str, Any]:
    """The keyword arguments of one call, passed on unchanged to each attempt, the fallback or a downgrade."""
    return {
        "tools": tools,
        "tool_choice": tool_choice,
        "json_output": json_output,
        "extra_create_args": extra_create_args,
        "cancellation_token": cancellation_token,
    }


def _delivered(delivery: Delivery, item: str | CreateResult) -> list[str | CreateResult]:
    """What to pass on for one item of an attempt: its new text, or (at the final result) a reset if it fell short."""
    if isinstance(item, CreateResult):
        return [*delivery.finish(), item]
    return list(delivery.take(item))
