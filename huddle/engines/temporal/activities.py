"""The model-call activity: the one place a workflow's model calls reach a model server.

Each attempt is one activity attempt, metered on the worker into the shared ledger under the attempt's own key (a
redelivered attempt settles the same row) (the profile's own retries are
off: Temporal retries, so every attempt is in the workflow's history and in the ledger once). The call heartbeats
while it waits, so a worker that dies mid-call is noticed within `HEARTBEAT_TIMEOUT` and the call is sent again from
another worker.
"""

from __future__ import annotations

import asyncio
import importlib
from contextlib import suppress
from datetime import timedelta
from typing import Any

from autogen_core.models import CreateResult, LLMMessage
from pydantic import BaseModel, TypeAdapter
from temporalio import activity
from temporalio.exceptions import ApplicationError

from huddle.config.settings import ModelProfile
from huddle.engines.temporal.calls import ModelCall, ModelReply
from huddle.models import usage_details
from huddle.models.factory import build_client
from huddle.models.metering import MeteredClient
from huddle.resilience import is_retryable
from huddle.secrets import redact
from huddle.usage import UsageLedger, usage_scope

MESSAGES: TypeAdapter[list[LLMMessage]] = TypeAdapter(list[LLMMessage])
HEARTBEAT_EVERY_S = 1.0
HEARTBEAT_TIMEOUT = timedelta(seconds=4)


class ModelActivities:
    """The worker's model clients (one per profile and agent, kept across calls) and its ledger."""

    def __init__(self, ledger: UsageLedger) -> None:
        self.ledger = ledger
        self._clients: dict[tuple[str, str], MeteredClient] = {}

    @activity.defn(name="huddle.model")
    async def model_call(self, call: ModelCall) -> ModelReply:
        """Send `call` once (this attempt), metered; an error the profile would not retry is final."""
        profile = ModelProfile.model_validate(call.profile).model_copy(update={"max_retries": 0, "fallback": None})
        client = self._client(profile, call.agent)
        beating = asyncio.create_task(_heartbeat())
        details = usage_details.Details()
        try:
            info = activity.info()
            key = f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}/{info.attempt}"
            scope = usage_scope(run_id=call.run_id, session_id=call.session_id, call_key=key)
            with scope, usage_details.collecting(details):
                result = await client.create(
                    MESSAGES.validate_python(call.messages),
                    tools=call.tools,  # type: ignore[arg-type]  # ToolSchema dicts
                    json_output=_json_output(call.json_output),
                    extra_create_args=call.extra_create_args,
                )
        except Exception as exc:
            retries_left = activity.info().attempt <= int(call.profile.get("max_retries", 2))
            raise ApplicationError(
                redact(f"{type(exc).__name__}: {exc}"),
                type=type(exc).__name__,
                non_retryable=not (retries_left and is_retryable(exc)),
            ) from None
        finally:
            beating.cancel()
            with suppress(asyncio.CancelledError):
                await beating
        return ModelReply(
            result=result.model_dump(mode="json"),
            cached_tokens=details.cached_tokens,
            reasoning_tokens=details.reasoning_tokens,
        )

    def _client(self, profile: ModelProfile, agent: str) -> MeteredClient:
        key = (profile.model_dump_json(), agent)
        if key not in self._clients:
            self._clients[key] = build_client(profile, self.ledger, agent=agent)
        return self._clients[key]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()


async def _heartbeat() -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT_EVERY_S)


def _json_output(value: bool | str | None) -> bool | type[BaseModel] | None:
    """The pydantic model a structured call asked for, imported by name on this worker (same code as the caller's)."""
    if not isinstance(value, str):
        return value
    module, _, name = value.partition(":")
    found: Any = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    return found  # type: ignore[no-any-return]


def result_of(reply: ModelReply) -> CreateResult:
    return CreateResult.model_validate(reply.result)
