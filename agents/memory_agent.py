"""The memory agent: stores facts the user asks the team to remember and recalls what is relevant, with no model call.

Both are decisions the framework can make itself: "remember that ..." is a pattern, and relevance is an embedding
similarity in the shared vector memory. Recalled items are posted as one message, within a token budget, so every
other agent sees the same context.

A store that is down (at start or mid-session) makes this member's turn a failure, which the manager routes around;
when a fact the user asked to remember could not be stored, the failure says ``could not store: <fact>``, and the
responder, who reads failures, tells the user rather than letting them believe it was kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core import CancellationToken

from huddle import effects, prompts
from huddle.agents.state import RunState
from huddle.memory.embedders import QUERY_CHARS
from huddle.memory.store import MemoryUnavailable

if TYPE_CHECKING:
    from huddle.memory.items import MemoryItem
    from huddle.memory.store import VectorMemory

# A fact runs to the end of its sentence (". ", "?", "!" or a line break); a dot inside it ("a.b@c.com", "1.5") stays.
_REMEMBER = re.compile(r"\bremember(?:\s+that)?[:,]?\s+(?P<fact>(?:(?!\.\s)[^?!\n])*[^?!\n.\s])", re.IGNORECASE)
# "please do not remember this: ...", "don't remember", "never remember": a refusal, not a request to store.
_NEGATED = re.compile(r"\b(?:not|don't|dont|never|no\s+need\s+to)[^\w.?!]*(?:\w+[^\w.?!]+){0,2}$", re.IGNORECASE)


def stated_facts(text: str) -> list[str]:
    """Facts the user explicitly asks to be remembered ("remember that my order number is 1042"), never ones they
    ask not to be ("please do not remember this: my card is 4111...")."""
    return [m.group("fact").strip() for m in _REMEMBER.finditer(text) if not _NEGATED.search(text[: m.start()][-40:])]


class MemoryAgent(BaseChatAgent):
    """Stores stated facts and posts recalled items for the task; completes its plan steps."""

    def __init__(
        self,
        name: str,
        description: str,
        memory: VectorMemory | Callable[[], VectorMemory],
        state: RunState,
        *,
        scopes: Sequence[str],
        k: int = 5,
        min_score: float = 0.8,
        token_budget: int = 400,
        prompt: str = "memory",
    ) -> None:
        """`memory` is the store, or how to open it: asked at every turn, so a store that was down is used again
        once it is back (the team's opener keeps the store once open)."""
        super().__init__(name, description)
        self._memory = memory if callable(memory) else lambda: memory
        self._state = state
        self._scopes = list(scopes)
        self._k, self._min_score, self._budget = k, min_score, token_budget
        self._prompt = prompt

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        task = self._state.task
        facts = stated_facts(task)
        stored: list[MemoryItem] = []
        try:
            memory = self._memory()
            # Embedding and the store are blocking CPU/disk work: keep them off the event loop.
            for fact in facts:
                stored.append(
                    await effects.offload(
                        memory.add, fact, scope=self._scopes[0], kind="fact", agent=self.name, run_id=self._state.run_id
                    )
                )
            scopes = self._scopes + ([self._state.session_scope] if self._state.session_scope else [])
            recalled = await effects.offload(
                memory.recall,
                task[:QUERY_CHARS],
                scopes=scopes,
                k=self._k,
                min_score=self._min_score,
                token_budget=self._budget,
            )
        except Exception as exc:
            unstored = facts[len(stored) :]
            if not unstored:
                raise  # the guard makes it this member's failure
            why = str(exc) if isinstance(exc, MemoryUnavailable) else f"{type(exc).__name__}: {exc}"
            raise MemoryUnavailable(f"could not store: {'; '.join(unstored)} ({why})") from exc
        items = [r for r in recalled if r.item.id not in {s.id for s in stored}]
        content = prompts.render(
            self._prompt,
            stored=f" (stored: {'; '.join(s.text for s in stored)})" if stored else "",
            items="\n".join(f"- {r.item.text} (score {r.score:.2f})" for r in items) or "- nothing relevant recalled",
        )
        for step in self._state.ready_for(self.name):
            self._state.complete(step.id, content)
        metadata = {"kind": "memory", "recalled": str(len(items)), "stored": str(len(stored))}
        if not items and not stored:
            metadata["internal"] = (
                "true"  # "nothing relevant recalled" is a note for the trace, not for anyone's answer
            )
        return Response(chat_message=TextMessage(content=content.strip(), source=self.name, metadata=metadata))

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        """Stateless between turns: the memory store is the state."""
