"""Event-driven: members subscribe to topics and react when an event is published on one; their output is published
in turn, until nothing is left to handle or a stop event arrives.

The run publishes the task on ``team.start_topic`` (default ``task``). An event starts one handler per subscribed
member, concurrently (several subscribers to one topic are a fan-out). A member's output is published on its
``publish`` topic; a member with several is a router: a first line ``topic: NAME`` naming one of them picks it (and
is not part of the payload), otherwise the first is used, so a model that forgets the line still goes the default
way. A member with no ``publish`` topic is a sink. A failing handler publishes ``member_failed`` (payload: who failed
on which topic and why), so other members can react to failures.

The run ends when:

* an event is published on one of ``team.stop_topics``: handlers still running are cancelled, and the event's payload
  is the answer (``stop_reason`` ``stop event: TOPIC from MEMBER``);
* no handler is pending (``idle``): the answer is the last output a handler produced;
* ``team.max_events`` events have been published (a guard against members that keep triggering each other).

The answer is also posted as a message from the team itself (its name is the ``responder``).

A member that is a nested team and pauses for approvals pauses the run once every other handler is done
(`PatternTeam`): events for it meanwhile wait in a backlog (its conversation is paused), and the resume takes it up
where it stopped, then hands it the waiting events. A stop event that arrives first ends the run: the paused calls
never run.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, ClassVar

from autogen_agentchat.messages import TextMessage

from huddle.teams.base import MemberError, Outcome, Run
from huddle.teams.kinds import FAILED_TOPIC
from huddle.teams.patterns import Member, MemberPaused, PatternTeam, TeamMember, failure_note

_ROUTE = re.compile(r"\A\s*topic:\s*(\S+)[ \t]*(?:\n|\Z)", re.IGNORECASE)


class EventDrivenTeam(PatternTeam):
    """Members reacting to topics; see the module docstring."""

    kind: ClassVar[str] = "event_driven"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subscribers: dict[str, list[Member]] = {}
        for member in self.members.values():
            for topic in member.spec.subscribe:
                self.subscribers.setdefault(topic, []).append(member)
        self.backlog: dict[str, Any] = {}  # a paused run's bus: the handlers to take up, events waiting, counts

    async def orchestrate(self, run: Run) -> Outcome:
        self.backlog = {}
        return await super().orchestrate(run)

    async def save_state(self) -> dict[str, Any]:
        return {**await super().save_state(), "backlog": self.backlog}

    async def load_state(self, state: dict[str, Any]) -> None:
        await super().load_state(state)
        self.backlog = dict(state.get("backlog") or {})

    @property
    def responder(self) -> str:
        return self.spec.team.name

    async def flow(self, run: Run) -> Outcome:
        bus = _Bus(self, run)
        backlog, self.backlog = self.backlog, {}
        try:
            if backlog:  # resumed: the paused handlers first, then the events that waited for them
                bus.events, bus.last_output = backlog["events"], backlog["last_output"]
                for name, topic, payload in [*backlog["paused"], *backlog["waiting"]]:
                    bus.start(self.members[name], topic, payload)
                if not bus.pending:
                    bus.idle.set()
            else:
                bus.publish(self.spec.team.start_topic, run.task, source="user")
            await bus.idle.wait()
        finally:  # ended, stopped or cancelled: no handler outlives the run
            await bus.drain()
        if bus.stopped_by is None and (waiting := self.paused(run)) is not None:
            self.backlog = {
                "events": bus.events,
                "last_output": bus.last_output,
                "paused": bus.paused,
                "waiting": bus.waiting,
            }
            return waiting
        self.state.pending = []  # a stop event came first: the paused calls never run
        if bus.stopped_by is not None:
            topic, source, answer = bus.stopped_by
            reason = f"stop event: {topic} from {source}"
        elif bus.events > self.spec.team.max_events:
            answer, reason = bus.last_output, f"max_events: {self.spec.team.max_events} events published"
        else:
            answer, reason = bus.last_output, "idle: no handler pending"
        if run.failures:
            reason += f"; {failure_note(run.failures)}"
        run.emit(TextMessage(content=answer, source=self.responder))
        return Outcome(answer, reason)


def route(member: Member, output: str) -> tuple[list[str], str]:
    """The topic `output` is published on (none for a sink), and the payload without the line that picked it."""
    topics = member.spec.publish
    match = _ROUTE.match(output)
    if match is not None and match.group(1) in topics:
        return [match.group(1)], output[match.end() :]
    return topics[:1], output


class _Bus:
    """One run's topics: starts handlers for published events and says when the run is over."""

    def __init__(self, team: EventDrivenTeam, run: Run) -> None:
        self.team, self.run = team, run
        self.pending: set[asyncio.Task[None]] = set()
        self.idle = asyncio.Event()
        self.events = 0
        self.stopped_by: tuple[str, str, str] | None = None  # topic, source, payload
        self.last_output = ""
        self.paused: list[tuple[str, str, str]] = []  # member, topic, payload of handlers that paused
        self.waiting: list[tuple[str, str, str]] = []  # events for a paused member, handed to it on resume
        self._turns: dict[str, asyncio.Lock] = {}  # a nested team's handlers, one at a time

    def publish(self, topic: str, payload: str, *, source: str) -> None:
        if self.idle.is_set():
            return  # stopped: later events are dropped
        self.events += 1
        info = self.team.spec.team
        if topic in info.stop_topics:
            self.run.decide(source, "stop", f"published {topic}")
            self.stopped_by = (topic, source, payload)
            self._stop()
            return
        if self.events > info.max_events:
            self.run.decide(source, "stop", f"published {topic}, past max_events {info.max_events}")
            self._stop()
            return
        for member in self.team.subscribers.get(topic, []):
            self.run.decide(member.name, "event", f"{topic} from {source}")
            self.start(member, topic, payload)
        if not self.pending:
            self.idle.set()

    def start(self, member: Member, topic: str, payload: str) -> None:
        """A handler of `member` for one event, in a task of its own."""
        task = asyncio.create_task(self._handle(member, topic, payload))
        self.pending.add(task)
        task.add_done_callback(self._finished)

    async def _handle(self, member: Member, topic: str, payload: str) -> None:
        if not isinstance(member, TeamMember):
            await self._react(member, topic, payload)
            return
        async with self._turns.setdefault(member.name, asyncio.Lock()):
            if any(p.path[:1] == [member.name] for p in self.team.state.pending) and member.resuming is None:
                self.waiting.append((member.name, topic, payload))  # its conversation waits for approvals
                return
            await self._react(member, topic, payload)

    async def _react(self, member: Member, topic: str, payload: str) -> None:
        try:
            output = await self.team.call(member, payload, self.run, topic=topic)
        except MemberPaused:
            self.paused.append((member.name, topic, payload))
            return
        except MemberError as error:
            self.run.fail(error)
            self.publish(FAILED_TOPIC, f"{member.name} failed on {topic}: {error.reason}", source=member.name)
            return
        self.last_output = output
        topics, body = route(member, output)
        for out in topics:
            self.publish(out, body, source=member.name)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.pending.discard(task)
        if not self.pending:
            self.idle.set()

    async def drain(self) -> None:
        """Stop the bus and wait until every handler still running has been cancelled."""
        pending = list(self.pending)
        self._stop()
        await asyncio.gather(*pending, return_exceptions=True)

    def _stop(self) -> None:
        current = asyncio.current_task()
        for task in self.pending:
            if task is not current:
                task.cancel()
        self.idle.set()
