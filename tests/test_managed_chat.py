"""The managed chat loop keeps autogen's contract with its participants: each speaker is sent the chat messages posted
since its last turn, its events stream in order, termination conditions end a task, and state survives a save/load."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response, TaskResult
from autogen_agentchat.conditions import ExternalTermination, TextMentionTermination
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, SelectSpeakerEvent, TextMessage, ThoughtEvent
from autogen_core import CancellationToken

from huddle.teams.managed_chat import THREAD_TAIL, Event, ManagedChat


class Echo(BaseChatAgent):
    """Remembers what it was sent each turn; thinks aloud (an event), then answers with a numbered line."""

    def __init__(self, name: str) -> None:
        super().__init__(name, f"{name} echoes")
        self.received: list[list[str]] = []
        self.say = ""

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        raise NotImplementedError  # the loop streams

    async def on_messages_stream(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | Response, None]:
        self.received.append([f"{m.source}:{m.to_text()}" for m in messages])
        thought = ThoughtEvent(content=f"{self.name} thinks", source=self.name)
        yield thought
        yield Response(
            chat_message=TextMessage(content=self.say or f"{self.name} {len(self.received)}", source=self.name),
            inner_messages=[thought],
        )

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        self.received.clear()

    async def save_state(self) -> dict[str, int]:
        return {"turns": len(self.received)}

    async def load_state(self, state: object) -> None:
        assert isinstance(state, dict)
        self.received = [[] for _ in range(state["turns"])]


def alternating(thread: Sequence[Event]) -> str:
    """a, b, a, b, ... by the number of chat messages the agents posted so far."""
    spoken = sum(1 for m in thread if isinstance(m, BaseChatMessage) and m.source != "user")
    return "ab"[spoken % 2]


async def select(thread: Sequence[Event]) -> str:
    return alternating(thread)


def chat(stopper: ExternalTermination | None = None, max_turns: int | None = 3) -> tuple[ManagedChat, Echo, Echo]:
    a, b = Echo("a"), Echo("b")
    conditions = [TextMentionTermination("stop now", sources=["a", "b"]), *([stopper] if stopper else [])]
    return ManagedChat([a, b], select, conditions, max_turns=max_turns), a, b


async def run(loop: ManagedChat, task: str) -> tuple[list[Event], TaskResult]:
    items = [item async for item in loop.run_stream(task)]
    result = items.pop()
    assert isinstance(result, TaskResult)
    return items, result


async def test_each_speaker_gets_what_was_posted_since_its_last_turn() -> None:
    loop, a, b = chat()
    items, result = await run(loop, "hello")
    assert [(type(i).__name__, i.source) for i in items] == [
        ("TextMessage", "user"),
        ("SelectSpeakerEvent", "manager"),  # who speaks next, before each turn
        ("ThoughtEvent", "a"),
        ("TextMessage", "a"),
        ("SelectSpeakerEvent", "manager"),
        ("ThoughtEvent", "b"),
        ("TextMessage", "b"),
        ("SelectSpeakerEvent", "manager"),
        ("ThoughtEvent", "a"),
        ("TextMessage", "a"),
    ]
    assert [i.content for i in items if isinstance(i, SelectSpeakerEvent)] == [["a"], ["b"], ["a"]]
    assert result.stop_reason == "Maximum number of turns 3 reached."
    assert [m.to_text() for m in result.messages] == ["hello", "a 1", "b 1", "a 2"]  # chat messages only
    assert a.received == [["user:hello"], ["b:b 1"]]
    assert b.received == [["user:hello", "a:a 1"]]
    await run(loop, "again")  # a chat: the next task continues the same conversation
    assert b.received[1] == ["a:a 2", "user:again"]


async def test_a_termination_condition_ends_the_task_and_is_reset() -> None:
    stopper = ExternalTermination()
    loop, a, b = chat(stopper, max_turns=2)
    stopper.set()  # e.g. the user pressed Ctrl-C between tasks: checked before anyone speaks
    items, result = await run(loop, "hello")
    assert result.stop_reason == "External termination requested" and len(items) == 1 and a.received == []
    _, result = await run(loop, "hello again")  # reset after the task: it no longer stops the next one
    assert result.stop_reason == "Maximum number of turns 2 reached." and len(b.received) == 1


async def test_an_agent_mention_ends_the_task() -> None:
    loop, a, _ = chat(max_turns=None)
    a.say = "stop now, please"
    _, result = await run(loop, "hello")
    assert result.stop_reason == "Text 'stop now' mentioned" and [m.source for m in result.messages] == ["user", "a"]


async def test_state_survives_a_save_and_load_into_a_new_chat() -> None:
    first, _, _ = chat()
    await run(first, "hello")
    saved = await first.save_state()
    second, a, b = chat()
    await second.load_state(saved)
    assert len(a.received) == 2 and len(b.received) == 1  # each participant's own state
    await run(second, "more")  # b speaks first: the restored thread says a spoke last
    assert b.received[1] == ["a:a 2", "user:more"]  # what b had not seen yet, then the new task


async def test_the_thread_and_unseen_messages_keep_their_tails_only() -> None:
    """Over a long chat the saved thread and what a member that never speaks has not seen stop growing: the manager
    reads the thread's tail, and the session store keeps the whole transcript."""

    async def always_a(thread: Sequence[Event]) -> str:
        return "a"

    a, silent = Echo("a"), Echo("silent")
    loop = ManagedChat([a, silent], always_a, [], max_turns=1)
    for task in range(THREAD_TAIL):
        await run(loop, f"task {task}")
    saved = await loop.save_state()
    chats = [m for m in saved["thread"] if m["type"] == "TextMessage"]
    assert len(chats) == THREAD_TAIL and chats[-1]["content"] == f"a {THREAD_TAIL}"
    assert saved["thread"][0]["type"] == "TextMessage"  # cut at a chat message, the events after it kept
    assert [m["content"] for m in saved["unseen"]["silent"]][-2:] == [f"task {THREAD_TAIL - 1}", f"a {THREAD_TAIL}"]
    assert len(saved["unseen"]["silent"]) == THREAD_TAIL
    restored = ManagedChat([Echo("a"), Echo("silent")], always_a, [], max_turns=1)
    await restored.load_state(saved)
    assert await restored.save_state() == saved
