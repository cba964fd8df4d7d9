"""The conversation loop of a managed group chat: the manager names a speaker, the speaker answers, until a
termination condition or the turn limit ends the task.

Why not autogen's ``SelectorGroupChat``, which `GroupChatTeam` used to drive: with our manager as its
``selector_func``, all it added was its agent runtime, which routes every turn through a publish/subscribe queue
(a task and several messages per turn, each serialised to JSON for its event log and wrapped in OpenTelemetry spans
even when nothing reads them), and its ``a | b`` termination, which asks every condition in a task of its own. This
loop took a turn from 1.7 to 0.6 ms of CPU on these machines, model calls aside (``bench/overhead.py``, in-process
rows).

It keeps autogen's contract with the participants, which are still autogen ``ChatAgent`` s (custom ones included):
each is sent, when it speaks, the chat messages posted since its last turn, the task included; its streamed events
and its final message go to the caller in order; the manager reads the thread, events included; autogen
termination conditions, any one of them, end a task. The thread, the unseen messages and every participant's state
survive `save_state` / `load_state`.

The thread and the unseen messages keep only their last `THREAD_TAIL` chat messages (and the events among them): the
manager reads the last 8, and a chat saved after every task would otherwise save its whole past each time (quadratic
over a long chat). The full transcript is kept once, by the session store (each turn's messages).

Before each turn the caller is also sent autogen's ``SelectSpeakerEvent`` naming the speaker (what a console needs
to say who is thinking), with the manager's decision (turn, policy, reason) in its metadata when the selector is our
`Manager`'s. It is an event, not a chat message: it is not added to the thread, the participants never see it, and
callers that collect chat messages (a `RunResult`, a durable session, a scenario) skip it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from autogen_agentchat.base import ChatAgent, Response, TaskResult, TerminationCondition
from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    MessageFactory,
    SelectSpeakerEvent,
    StopMessage,
    TextMessage,
)
from autogen_core import CancellationToken

from huddle.errors import HuddleError
from huddle.teams.manager import Decision

Event = BaseAgentEvent | BaseChatMessage
Selector = Callable[[Sequence[Event]], Awaitable[str]]

THREAD_TAIL = 32
"""Chat messages the thread keeps (the manager reads 8), and the most a participant is shown when it speaks."""


class ManagedChat:
    """One conversation among `participants`, lasting a chat session: each `run_stream` is one task on it."""

    def __init__(
        self,
        participants: Sequence[ChatAgent],
        select: Selector,
        termination: Sequence[TerminationCondition],
        max_turns: int | None,
    ) -> None:
        self.participants = {p.name: p for p in participants}
        self._select = select
        self._termination = list(termination)  # any one ends the task
        self._max_turns = max_turns
        self._thread: list[Event] = []  # what the manager reads
        self._unseen: dict[str, list[BaseChatMessage]] = {name: [] for name in self.participants}
        self._factory = MessageFactory()

    async def run_stream(
        self, task: str, cancellation_token: CancellationToken | None = None
    ) -> AsyncIterator[Event | TaskResult]:
        """Yield the task message, every participant's events and messages as they come, then a `TaskResult`."""
        start = TextMessage(content=task, source="user")
        self._post([start], speaker=None)
        yield start
        async for item in self._turns(start, cancellation_token or CancellationToken()):
            yield item

    async def continue_stream(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken | None = None
    ) -> AsyncIterator[Event | TaskResult]:
        """Take up a task that paused (for approvals): post `messages` as their members' turns, then go on as
        `run_stream` does from the last of them."""
        for message in messages:
            self._unseen[message.source] = []
            self._post([message], speaker=message.source)
            yield message
        async for item in self._turns(messages[-1], cancellation_token or CancellationToken()):
            yield item

    async def _turns(self, first: BaseChatMessage, token: CancellationToken) -> AsyncIterator[Event | TaskResult]:
        """The turns after `first` (the task, or the message a paused task goes on from), until a condition or the
        turn limit ends them."""
        messages: list[BaseChatMessage] = [first]
        try:
            stop = await self._stopped([first])
            turns = 0
            while stop is None:
                if self._max_turns is not None and turns >= self._max_turns:
                    stop = StopMessage(content=f"Maximum number of turns {self._max_turns} reached.", source="manager")
                    break
                speaker = await self._select(self._thread)
                if speaker not in self.participants:
                    raise ValueError(f"the selector chose {speaker!r}, who is not in this chat")
                yield self._selected(speaker)
                response: Response | None = None
                async for item in self.participants[speaker].on_messages_stream(self._unseen[speaker], token):
                    if isinstance(item, Response):
                        response = item
                        messages.append(item.chat_message)
                        yield item.chat_message
                    else:
                        yield item
                if response is None:
                    raise RuntimeError(f"{speaker} ended its turn without a response")
                self._unseen[speaker] = []
                delta = [*(response.inner_messages or ()), response.chat_message]
                self._post(delta, speaker)
                turns += 1
                stop = await self._stopped(delta)
        finally:
            for condition in self._termination:
                await condition.reset()
        yield TaskResult(messages=messages, stop_reason=stop.content)

    def _selected(self, speaker: str) -> SelectSpeakerEvent:
        """The event announcing `speaker`, with the decision that chose it when the selector is a bound method of an
        object that keeps its decisions (our `Manager`: its ``select`` appends one per call to ``decisions``)."""
        decisions = getattr(getattr(self._select, "__self__", None), "decisions", None)
        decision = decisions[-1] if decisions else None
        metadata: dict[str, str] = {}
        if isinstance(decision, Decision) and decision.speaker == speaker:
            metadata = {"turn": str(decision.turn), "policy": decision.policy, "reason": decision.reason}
        return SelectSpeakerEvent(content=[speaker], source="manager", metadata=metadata)

    async def _stopped(self, delta: Sequence[Event]) -> StopMessage | None:
        """The first condition that ends the task on this turn, asked in order (autogen's ``a | b`` asks all of them
        at once, each in a task of its own: measured, half of a turn's CPU once model calls are set aside)."""
        for condition in self._termination:
            stop = await condition(delta)
            if stop is not None:
                return stop
        return None

    def _post(self, delta: Sequence[Event], speaker: str | None) -> None:
        """Add a turn's messages to the thread; the other participants are shown its chat message (the last one)
        when they speak."""
        self._thread.extend(delta)
        self._thread = _tail(self._thread)
        shown = delta[-1]
        assert isinstance(shown, BaseChatMessage)  # a turn ends with its chat message; the task is one
        for name, unseen in self._unseen.items():
            if name != speaker:
                unseen.append(shown)
                del unseen[:-THREAD_TAIL]

    async def save_state(self) -> dict[str, Any]:
        return {
            "thread": [m.dump() for m in self._thread],
            "unseen": {name: [m.dump() for m in unseen] for name, unseen in self._unseen.items()},
            "participants": {name: dict(await p.save_state()) for name, p in self.participants.items()},
        }

    async def load_state(self, state: Mapping[str, Any]) -> None:
        if "thread" not in state:
            # Sessions saved before this loop hold autogen SelectorGroupChat's state instead.
            raise HuddleError(
                "this session was saved by an older huddle whose group chats ran on autogen's SelectorGroupChat; "
                "its turns are still listed by `huddle sessions show`, but it cannot be continued: start a new session"
            )
        self._thread = _tail([self._factory.create(m) for m in state["thread"]])  # saved whole by older versions
        self._unseen = {name: [] for name in self.participants}
        for name, unseen in state["unseen"].items():
            if name in self._unseen:
                self._unseen[name] = [self._load_chat(m) for m in unseen][-THREAD_TAIL:]
        for name, saved in state["participants"].items():
            if name in self.participants:
                await self.participants[name].load_state(saved)

    def _load_chat(self, data: Mapping[str, Any]) -> BaseChatMessage:
        message = self._factory.create(data)
        if not isinstance(message, BaseChatMessage):
            raise ValueError(f"saved state: a {type(message).__name__} where a chat message was expected")
        return message


def _tail(thread: list[Event]) -> list[Event]:
    """`thread` from its `THREAD_TAIL`-th last chat message on (the events after it kept with it)."""
    chats = 0
    for index in range(len(thread) - 1, -1, -1):
        if isinstance(thread[index], BaseChatMessage):
            chats += 1
            if chats == THREAD_TAIL:
                return thread[index:]
    return thread
