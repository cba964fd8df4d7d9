"""The memory agent stores only what the user asks it to remember, and recall embeds a bounded part of the task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autogen_core import CancellationToken

from huddle.agents.memory_agent import MemoryAgent, stated_facts
from huddle.agents.state import RunState
from huddle.memory.embedders import QUERY_CHARS


def test_facts_the_user_asks_to_remember_and_never_the_ones_they_refuse() -> None:
    assert stated_facts("Remember that my order number is 1042.") == ["my order number is 1042"]
    assert stated_facts("Please do **not** remember this: my card is 4111 1111 1111 1111") == []
    assert stated_facts("Don't remember my address, it is 1 Main St") == []
    assert stated_facts("I never remember names. Remember that Ana is my manager.") == ["Ana is my manager"]


class RecordingMemory:
    """Stands in for VectorMemory: records what was added and which query recall embedded."""

    def __init__(self) -> None:
        self.added: list[str] = []
        self.queries: list[str] = []

    def add(self, text: str, **_: Any) -> Any:
        self.added.append(text)
        return type("Item", (), {"id": str(len(self.added)), "text": text})()

    def recall(self, query: str, **_: Any) -> Sequence[Any]:
        self.queries.append(query)
        return []


async def test_a_huge_task_is_recalled_by_its_start_and_nothing_recalled_is_an_internal_note() -> None:
    memory = RecordingMemory()
    state = RunState()
    state.start("Where is my parcel? " + "x" * 100_000, "run1")
    agent = MemoryAgent("memory", "recalls", memory, state, scopes=["user:default"])  # type: ignore[arg-type]
    response = await agent.on_messages([], CancellationToken())
    assert [len(q) for q in memory.queries] == [QUERY_CHARS]
    assert response.chat_message.metadata["internal"] == "true"
