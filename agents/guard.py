"""A failing agent must not end the team's run: its failure becomes a message the manager can route around.

Every member of a team is wrapped in `GuardedAgent`. When the member raises (after its model calls' own retries and
fallback profiles are spent), the guard marks the member's ready plan steps as failed, records the failure in the run
state and posts ``<name> failed: <reason>`` with ``metadata.kind = "failure"``. The manager then reroutes the steps to
the member's ``reroute_to`` alternate, skips an optional member, or moves on so the responder answers with what the
run has and says what failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import ChatAgent, Response
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, TextMessage
from autogen_core import CancellationToken

from huddle import tracing
from huddle.agents.state import RunState
from huddle.secrets import redact

_REASON_CHARS = 300


class GuardedAgent(BaseChatAgent):
    """Delegates to `inner`; turns an exception into a failure message instead of an error that ends the run."""

    def __init__(self, inner: ChatAgent, state: RunState) -> None:
        super().__init__(inner.name, inner.description)
        self.inner = inner
        self._state = state

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (*self.inner.produced_message_types, TextMessage)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        async for item in self.on_messages_stream(messages, cancellation_token):
            if isinstance(item, Response):
                return item
        raise RuntimeError(f"{self.name} produced no response")  # on_messages_stream always ends with one

    async def on_messages_stream(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | Response, None]:
        with tracing.span(tracing.span_name("agent", self.name), "agent", agent=self.name) as turn:
            try:
                async for item in self.inner.on_messages_stream(messages, cancellation_token):
                    if isinstance(item, Response):
                        turn.set(message=item.chat_message.to_text()[:300])
                    yield item
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = failure_reason(exc)
                turn.fail(reason)
        # Only reached after a failure: the successful path returned inside the span.
        for step in self._state.ready_for(self.name):
            self._state.complete(step.id, f"failed: {reason}", ok=False)
        self._state.failures[self.name] = reason
        yield Response(
            chat_message=TextMessage(
                content=f"{self.name} failed: {reason}", source=self.name, metadata={"kind": "failure", "error": reason}
            )
        )

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        await self.inner.on_reset(cancellation_token)

    async def save_state(self) -> Mapping[str, Any]:
        return await self.inner.save_state()

    async def load_state(self, state: Mapping[str, Any]) -> None:
        await self.inner.load_state(state)

    async def close(self) -> None:
        """Close the member itself: a custom agent may hold connections or processes of its own."""
        await self.inner.close()


def failure_reason(exc: BaseException) -> str:
    """``Type: message`` for a failure record, secrets masked and bounded; an exception whose ``str`` itself raises
    is named by its type, so describing a failure can never fail in turn."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:
        text = f"{type(exc).__name__} (its message could not be read)"
    return redact(text)[:_REASON_CHARS]
