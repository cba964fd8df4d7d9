"""The responder: writes the user-facing answer (streamed when someone reads it) from the task and what the team found.

It is not shown the raw transcript: plans and routing chatter cost tokens and confuse small models. Its prompt is the
task, the results other members posted (tool results, recalled memory, custom agents' findings) and the last few
exchanges of the chat, so a follow-up question still has its context. The exchanges are the messages it sent and got
back, unchanged, after its (static) system prompt: each turn's request starts with the one before it, so a provider's
prompt cache reads that prefix at its cached rate instead of the whole prompt at the input rate. A member may put the
text the responder should read in ``metadata["findings"]`` (the tool executor gives one plain sentence per result
there); internal notes (``metadata["internal"] == "true"``) are never shown to it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, ModelClientStreamingChunkEvent, TextMessage
from autogen_core import CancellationToken
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    SystemMessage,
    UserMessage,
)

from huddle import prompts
from huddle.agents.state import RunState
from huddle.usage.budget import BudgetExhausted

_ROUTING_KINDS = {"plan"}  # messages that organise the work rather than contribute to the answer


class ResponderAgent(BaseChatAgent):
    """Answers the task from the team's findings; its message ends the run."""

    def __init__(
        self,
        name: str,
        description: str,
        client: ChatCompletionClient,
        state: RunState,
        *,
        prompt: str = "responder",
        history_turns: int = 3,
    ) -> None:
        super().__init__(name, description)
        self._client = client
        self._state = state
        self._prompt = prompt
        self._history_turns = history_turns
        self._findings: list[str] = []
        # Only the exchanges it is shown are kept (and saved): the session store has the whole transcript. Each is
        # (the user message it sent, the answer), so later requests repeat them byte for byte.
        self._history: deque[tuple[str, str]] = deque(maxlen=history_turns)

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        async for item in self.on_messages_stream(messages, cancellation_token):
            if isinstance(item, Response):
                return item
        raise RuntimeError("the responder produced no response")  # on_messages_stream always ends with one

    async def on_messages_stream(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | Response, None]:
        for m in messages:
            if (
                m.source in ("user", self.name)
                or m.metadata.get("kind") in _ROUTING_KINDS
                or m.metadata.get("internal") == "true"  # trace notes ("nothing relevant recalled") are not facts
            ):
                continue
            # A tool report's findings may be empty: its calls all wait for approval, which is not a fact yet.
            finding = m.metadata.get("findings", f"{m.source}: {m.to_model_text()}")
            if finding:
                self._findings.append(finding)
        asked = self._request_text()
        request: list[LLMMessage] = [SystemMessage(content=prompts.render(self._prompt, name=self.name))]
        for question, reply in self._history:
            request += [UserMessage(content=question, source="user"), AssistantMessage(content=reply, source=self.name)]
        request.append(UserMessage(content=asked, source="user"))
        result: CreateResult | None = None
        try:
            if self._state.stream_answer:
                async for item in self._client.create_stream(request, cancellation_token=cancellation_token):
                    if isinstance(item, CreateResult):
                        result = item
                    else:
                        yield ModelClientStreamingChunkEvent(content=item, source=self.name)
            else:  # nobody reads the chunks: parsing a stream costs a turn more CPU than one reply
                result = await self._client.create(request, cancellation_token=cancellation_token)
        except BudgetExhausted as exc:
            # No budget left even for the answer: a template with what the team found, no model call.
            findings = "\n".join(self._findings) or "Nothing was found before the budget ran out."
            answer, usage = prompts.render("budget_stop", reason=str(exc), findings=findings).strip(), None
        else:
            if result is None:
                raise RuntimeError("the model stream ended without a result")
            answer = result.content if isinstance(result.content, str) else str(result.content)
            usage = result.usage
        self._history.append((asked, answer))
        self._findings.clear()
        for step in self._state.ready_for(self.name):  # its plan step is done too: whoever shows the plan sees it
            self._state.complete(step.id, answer)
        yield Response(chat_message=TextMessage(content=answer, source=self.name, models_usage=usage))

    def _request_text(self) -> str:
        """This turn's user message (``prompts/responder_request.md``); empty sections are left out."""
        return prompts.render(
            "responder_request",
            message=prompts.render("responder_findings", findings="\n".join(self._findings), task=self._state.task)
            if self._findings
            else self._state.task,
            note=("\n\n" + prompts.render("budget_note", reason=self._state.stop_note).strip())
            if self._state.stop_note
            else "",
        ).strip()

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        self._findings.clear()
        self._history.clear()

    async def save_state(self) -> Mapping[str, Any]:
        return {"history": [list(pair) for pair in self._history], "findings": list(self._findings)}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self._history = deque(((q, a) for q, a in state.get("history", [])), maxlen=self._history_turns)
        self._findings = list(state.get("findings", []))
