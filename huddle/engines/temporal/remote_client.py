"""The model client a workflow's team holds: each `create` is the ``huddle.model`` activity on some worker.

It sits where the provider's client would (under the metering layer, via `build_client`'s `wrap`), so the workflow's
meter and budget governor see the same calls, tokens and prices as in-process, while the request itself goes to a
worker. A streamed call arrives whole: an activity returns once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from huddle.config.settings import ModelProfile
from huddle.engines.temporal.activities import HEARTBEAT_TIMEOUT, MESSAGES, result_of
from huddle.engines.temporal.calls import ModelCall, ModelReply, failure_text
from huddle.errors import HuddleError
from huddle.models import usage_details
from huddle.models.delegating import DelegatingClient
from huddle.usage import current_scope

LOST_WORKER_ATTEMPTS = 2
"""Attempts beyond the profile's retries, for calls whose worker died mid-call (a heartbeat timeout is not the
model's failure, and Temporal cannot tell them apart in `maximum_attempts`)."""


class RemoteCallFailed(HuddleError):
    """The model call failed on the worker (its message is the worker's error, secrets masked)."""


class RemoteModelClient(DelegatingClient):
    """`inner` (the provider's client, never called here) answers for capabilities and token counts."""

    def __init__(self, inner: ChatCompletionClient, profile: ModelProfile, agent: str, retries: int) -> None:
        super().__init__(inner)
        self.profile, self.agent, self.retries = profile, agent, retries

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | str = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        scope = current_scope()
        call = ModelCall(
            profile=self.profile.model_copy(update={"max_retries": self.retries}).model_dump(mode="json"),
            agent=self.agent,
            messages=MESSAGES.dump_python(list(messages), mode="json"),
            tools=[dict(t.schema if isinstance(t, Tool) else t) for t in tools],
            tool_choice=tool_choice if isinstance(tool_choice, str) else "required",
            json_output=_named(json_output),
            extra_create_args=dict(extra_create_args),
            run_id=scope.run_id,
            session_id=scope.session_id,
        )
        try:
            reply = await workflow.execute_activity(
                "huddle.model",
                call,
                result_type=ModelReply,
                start_to_close_timeout=timedelta(seconds=self.profile.timeout_s),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_attempts=self.retries + 1 + LOST_WORKER_ATTEMPTS,
                ),
            )
        except ActivityError as exc:
            raise RemoteCallFailed(f"model call failed on the worker: {failure_text(exc.cause or exc)}") from None
        usage_details.report(reply.cached_tokens, reply.reasoning_tokens)
        return result_of(reply)

    async def create_stream(
        self, messages: Sequence[LLMMessage], **kwargs: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        result = await self.create(messages, **kwargs)
        if isinstance(result.content, str) and result.content:
            yield result.content
        yield result


def _named(json_output: bool | type[BaseModel] | None) -> bool | str | None:
    if isinstance(json_output, type):
        return f"{json_output.__module__}:{json_output.__qualname__}"
    return json_output
