"""`SharedMemory`: a `VectorMemory` behind autogen's ``Memory`` protocol, so any AssistantAgent can use it.

Before each model call autogen asks the memory to update the agent's model context; we recall with the latest user
or assistant text and add one SystemMessage. Recalled text is data that anyone with write access to a scope may
have written, so the message frames it as reference material between ``<<<`` and ``>>>``, says it holds no
instructions, and neutralises those delimiters inside the items so an item cannot close the block early. The
framing text is the prompt template ``prompts/retrieved_context.md``. Blocking store calls run in a worker thread so
the event loop keeps serving other agents while a query is embedded.

The store going away (a Chroma server that stopped) must not stop the agent: autogen calls `update_context` before
every model call and has no way to handle its failure, so a recall that fails is one logged warning and no
memories, and the agent answers without them. `add` is called by the user's own code, which must learn that
nothing was stored: it raises `MemoryUnavailable` (a `HuddleError`, one line naming the store) rather than dropping
the item silently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autogen_core import CancellationToken
from autogen_core.memory import Memory, MemoryContent, MemoryMimeType, MemoryQueryResult, UpdateContextResult
from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import AssistantMessage, LLMMessage, SystemMessage, UserMessage

from huddle import effects, prompts
from huddle.memory.items import KINDS, RecalledItem, check_scope
from huddle.memory.store import MemoryUnavailable, VectorMemory

logger = logging.getLogger("huddle.memory")

_DELIMITERS = {"<<<": "< < <", ">>>": "> > >"}


def render_recalled(recalled: Sequence[RecalledItem]) -> str:
    """The SystemMessage text for `recalled`: one bullet per item inside the delimited block."""
    lines = []
    for entry in recalled:
        text = entry.item.text
        for delimiter, harmless in _DELIMITERS.items():
            text = text.replace(delimiter, harmless)
        origin = f" [from {Path(entry.item.source).name}]" if entry.item.source else ""
        lines.append("- " + text.replace("\n", "\n  ") + origin)
    return prompts.render("retrieved_context", items="\n".join(lines)).strip()


def _text_of(message: LLMMessage) -> str | None:
    """The plain text of a user or assistant message; None for tool calls, tool results and system messages."""
    if not isinstance(message, UserMessage | AssistantMessage):
        return None
    if isinstance(message.content, str):
        return message.content
    parts = [part for part in message.content if isinstance(part, str)]
    return "\n".join(parts) if parts else None


def _to_content(entry: RecalledItem) -> MemoryContent:
    item = entry.item
    metadata: dict[str, Any] = item.model_dump(exclude={"text"}) | {"score": entry.score, "tokens": entry.tokens}
    return MemoryContent(content=item.text, mime_type=MemoryMimeType.TEXT, metadata=metadata)


class SharedMemory(Memory):
    """autogen ``Memory`` over a `VectorMemory`: reads `scopes`, writes to the first of them.

    `k`, `token_budget` and `min_score` bound what is injected per model call; the budget counts the items' text
    (the framing adds a fixed ~45 tokens). `agent` and `run_id` are the provenance of items added through `add`.
    """

    def __init__(
        self,
        store: VectorMemory,
        scopes: str | Sequence[str],
        *,
        k: int = 5,
        token_budget: int | None = None,
        min_score: float | None = None,
        agent: str = "assistant",
        run_id: str | None = None,
    ) -> None:
        self.store = store
        self.scopes = [check_scope(scope) for scope in ([scopes] if isinstance(scopes, str) else scopes)]
        if not self.scopes:
            raise ValueError("SharedMemory needs at least one scope")
        self.k = k
        self.token_budget = token_budget
        self.min_score = min_score
        self.agent = agent
        self.run_id = run_id

    async def _recall(self, text: str, **overrides: Any) -> list[RecalledItem]:
        options: dict[str, Any] = {"k": self.k, "token_budget": self.token_budget, "min_score": self.min_score}
        options |= {name: value for name, value in overrides.items() if name in options}
        try:
            return await effects.offload(self.store.recall, text, scopes=self.scopes, **options)
        except MemoryUnavailable as exc:
            logger.warning("warning: answering without shared memory: %s", exc)
            return []

    async def update_context(self, model_context: ChatCompletionContext) -> UpdateContextResult:
        """Add one delimited SystemMessage with the items recalled for the latest user/assistant text."""
        messages = await model_context.get_messages()
        query = next((text for text in map(_text_of, reversed(messages)) if text and text.strip()), None)
        recalled = await self._recall(query) if query else []
        if recalled:
            await model_context.add_message(SystemMessage(content=render_recalled(recalled)))
        return UpdateContextResult(memories=MemoryQueryResult(results=[_to_content(entry) for entry in recalled]))

    async def query(
        self,
        query: str | MemoryContent,
        cancellation_token: CancellationToken | None = None,
        **kwargs: Any,
    ) -> MemoryQueryResult:
        """Items of the scopes nearest to `query`; `k`, `token_budget` and `min_score` may be overridden."""
        text = query.content if isinstance(query, MemoryContent) else query
        if not isinstance(text, str):
            raise TypeError(f"SharedMemory can only search with text, not {type(text).__name__}")
        return MemoryQueryResult(results=[_to_content(entry) for entry in await self._recall(text, **kwargs)])

    async def add(self, content: MemoryContent, cancellation_token: CancellationToken | None = None) -> None:
        """Store text content in the first scope; metadata may set kind, tags, agent, run_id and ttl_s.

        Raises `MemoryUnavailable` when the store is down: the caller decides whether to retry or go on.
        """
        if not isinstance(content.content, str):
            raise TypeError(f"SharedMemory stores text only, not {type(content.content).__name__}")
        metadata = content.metadata or {}
        kind = metadata.get("kind", "fact")
        if kind not in KINDS:
            raise ValueError(f"memory kind must be one of {', '.join(KINDS)}, got {kind!r}")
        await effects.offload(
            self.store.add,
            content.content,
            scope=self.scopes[0],
            kind=kind,
            tags=metadata.get("tags", ()),
            agent=metadata.get("agent", self.agent),
            run_id=metadata.get("run_id", self.run_id),
            ttl_s=metadata.get("ttl_s"),
        )

    async def clear(self) -> None:
        """Forget the first (written) scope; the other scopes are only read, and may be shared with others."""
        await effects.offload(self.store.forget_scope, self.scopes[0])

    async def close(self) -> None:
        """Nothing to release: the store belongs to whoever created it and may serve other agents."""
