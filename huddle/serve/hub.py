"""The teams a server serves and the turns it runs on their sessions: what every endpoint of ``huddle serve`` calls.

One `Hub` per server process. A turn is one user message on one session: the team is built for the turn, restored
from the session store (`DurableTeam`), run, saved and closed, so an idle session costs a row on disk and nothing in
memory, and any worker process sharing the data directory can take the next turn. Within a process a session runs
one turn at a time: a second message while one runs gets `SessionBusy` (HTTP 409) rather than waiting, so a client
never has two answers racing for one conversation; across processes the session store's lease does the same.

A turn that pauses for approvals (a tool call waits for a person's yes) ends with an ``approval`` event listing the
pending calls, then its ``result`` (``stop_reason`` ``awaiting_approval``, no answer); nothing waits in memory, and
`Hub.approve` takes the paused turn up again with the decisions, in this process or any other sharing the data
directory. A new message on a paused session cancels the paused turn instead (its calls never run).

Who may use a session is the `Access` policy's business (API keys, owners, per-key budgets: `huddle.serve.keys`);
the hub asks it before every turn, and the budget it returns is the one the team's governor enforces.

With ``engine: temporal`` the turn runs on the Temporal engine instead (`huddle.serve.temporal_turns`): admitted here
the same way, then sent to the session's workflow on ``huddle worker`` processes, its events arriving when it ends.
The budget `Access.budget` returns goes with the turn and holds the workflow's run, as it holds the local team's.
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from huddle.agents.approval import AWAITING, ApprovalDecision, PendingCall, check_decisions
from huddle.config.settings import Settings
from huddle.engines import require_temporal
from huddle.errors import ConfigError, HuddleError
from huddle.serve.events import TeamEvent, describe
from huddle.storage.lease import SessionBusyError
from huddle.storage.sessions import SessionStore, SessionSummary, Turn
from huddle.teams.base import RunResult, Team, build_team
from huddle.teams.durable import DurableTeam
from huddle.teams.kinds import PatternSpec, load_any_team
from huddle.teams.managed_chat import Event
from huddle.teams.results import MessageRecord
from huddle.teams.spec import TeamSpec
from huddle.usage import UsageLedger
from huddle.usage.budget import Budget

if TYPE_CHECKING:
    from huddle.serve.temporal_turns import TemporalTurns

SESSION_ID_CHARS = 64


class SessionBusy(HuddleError):
    """The session is running a turn (here or in another worker); send the next message when it has answered."""

    status = 409


class SessionNotFound(HuddleError):
    """No such session, or one that belongs to another API key (the two look the same from outside)."""

    status = 404


class DecisionsRefused(HuddleError):
    """Approval decisions that do not fit the session: nothing waits for approval, or they name a call that is not
    pending."""

    status = 422


class UnknownTeam(HuddleError):
    """The request names a team this server does not serve."""

    status = 404


class Access(Protocol):
    """Who may use which session, and within what budget (`huddle.serve.keys.KeyAccess` with API keys)."""

    def claim(self, session_id: str, owner: str | None) -> None:
        """Allow `owner` to use `session_id` (a new one becomes theirs); raise `SessionNotFound` when it is not."""

    def budget(self, owner: str | None, session_id: str, budget: Budget) -> Budget:
        """The budget a turn of `owner` on `session_id` runs under: `budget` with the owner's own limits folded in."""

    def owns(self, session_id: str, owner: str | None) -> bool:
        """Whether `owner` may see `session_id` (for listings)."""


class OpenAccess:
    """No keys (a loopback server): every caller may use every session, under the settings' budget."""

    def claim(self, session_id: str, owner: str | None) -> None:
        return None

    def budget(self, owner: str | None, session_id: str, budget: Budget) -> Budget:
        return budget

    def owns(self, session_id: str, owner: str | None) -> bool:
        return True


@dataclass(frozen=True)
class Member:
    name: str
    description: str


@dataclass(frozen=True)
class ServedTeam:
    """A team as clients see it: its name (the OpenAI ``model``, the A2A agent), description and members."""

    name: str
    spec: TeamSpec | PatternSpec
    description: str
    members: tuple[Member, ...]


@dataclass(frozen=True)
class TurnEnd:
    """A turn that ran to its end, for the server's metrics: ``done``, ``failed`` (no answer, or the run raised),
    ``awaiting_approval`` (paused for a person's yes) or ``cancelled`` (its stream was closed early)."""

    team: str
    session_id: str
    run_id: str
    outcome: str
    seconds: float


class TurnEvents:
    """A turn's events (an async iterator the caller closes with ``aclose``, or ``contextlib.aclosing``).

    A generator's ``finally`` runs only once it has started, so a turn whose client went away before its first event
    (a stream response never iterated) kept its session busy and its lease held for good. This frees them however
    the turn ends: run to its end, closed, or dropped without either.
    """

    def __init__(self, events: AsyncGenerator[TeamEvent, None], release: Callable[[], None]) -> None:
        self._events = events
        self._release = release
        self._finalizer = weakref.finalize(self, release)

    def __aiter__(self) -> TurnEvents:
        return self

    async def __anext__(self) -> TeamEvent:
        return await anext(self._events)

    async def aclose(self) -> None:
        try:
            await self._events.aclose()
        finally:
            self._finalizer()


@dataclass(frozen=True)
class Admitted:
    """A turn the hub has admitted (the session held, the decisions checked, the budget decided), for an engine to
    run: a new message (`task`), decisions for the paused turn, or neither (a crashed turn's redo)."""

    session_id: str
    run_id: str
    served: ServedTeam
    task: str | None
    decisions: dict[str, ApprovalDecision] | None
    store: SessionStore
    budget: Budget


@dataclass(frozen=True)
class TurnStream:
    """A turn that has been admitted: its session and run ids (known before the first event), then its events, the
    last of which is the ``result``. Iterate `events` to the end or close it: the turn runs as it is iterated."""

    session_id: str
    run_id: str
    team: str
    events: TurnEvents
    budget: Budget


class Hub:
    """Serves `teams` (preset names or team YAML paths) with the settings' models, budget and data directory."""

    def __init__(self, settings: Settings, teams: Sequence[str | Path] = ("assistant",), access: Access | None = None):
        self.settings = settings
        self.access: Access = access or OpenAccess()
        self.teams = served_teams(teams)
        self.ledger = UsageLedger(settings.ledger_location)
        self._running: set[str] = set()
        self.observers: list[Callable[[TurnEnd], None]] = []
        """Told of every turn that ran a new message, once it has ended (`huddle.serve.ops` meters them)."""
        self._temporal: TemporalTurns | None = None
        if settings.engine == "temporal":  # turns run on `huddle worker`s (`huddle.serve.temporal_turns`)
            require_temporal()
            from huddle.serve.temporal_turns import TemporalTurns

            self._temporal = TemporalTurns(settings, self.events)

    def team(self, name: str) -> ServedTeam:
        served = self.teams.get(name)
        if served is None:
            raise UnknownTeam(f"team {name!r} is not served here; served: {', '.join(self.teams)}")
        return served

    async def turn(
        self, team: str, task: str | None, *, session_id: str | None = None, owner: str | None = None
    ) -> TurnStream:
        """Admit one message on `session_id` (a new session when None) and return its stream; the turn runs as the
        stream is iterated, and ends (saved as cancelled) if the caller stops iterating early. With `task` None only
        the session's unfinished turn is redone (`resume_unfinished`).

        Raises `UnknownTeam`, `SessionNotFound`, `SessionBusy` before anything runs, so an endpoint can answer with
        the proper status instead of a stream that fails at once."""
        served = self.team(team)
        return await self._admit(served, session_id or uuid.uuid4().hex, owner, task, None)

    async def approve(
        self, team: str, session_id: str, decisions: dict[str, ApprovalDecision], owner: str | None = None
    ) -> TurnStream:
        """Take up the session's turn that paused for approvals with `decisions` (pending calls' ids to approve, deny
        or edit; with some left undecided it pauses again on those); its stream is the rest of that turn, to its
        answer (or its next pause).

        Admitted like `turn` (`SessionNotFound` for an unknown session or another key's, `SessionBusy`), and
        `DecisionsRefused` before anything runs when nothing waits or the decisions name a call that is not pending;
        edited arguments the tool refuses end the stream with that error, the call still pending."""
        served = self.team(team)
        with SessionStore(self.settings.sessions_location) as store:
            known = store.team_of(session_id) if session_id.isprintable() else None
        if known is None or not self.access.owns(session_id, owner):
            raise SessionNotFound(f"no session {session_id!r}")
        if not decisions:
            raise DecisionsRefused("decisions: decide at least one pending call")
        return await self._admit(served, session_id, owner, None, decisions)

    def pending(self, session_id: str) -> list[PendingCall]:
        """The calls the session's paused turn waits on (none when it is not paused), from the session store on
        either engine: on Temporal the workers record a paused turn there before its Update returns, and the store
        answers with no worker running (the workflow's ``pending`` query needs one) and without a round trip per
        session of a listing."""
        with SessionStore(self.settings.sessions_location) as store:
            paused = store.awaiting(session_id)
        return [] if paused is None else [PendingCall.model_validate(p) for p in paused[2].get("pending", [])]

    async def _admit(
        self,
        served: ServedTeam,
        session_id: str,
        owner: str | None,
        task: str | None,
        decisions: dict[str, ApprovalDecision] | None,
    ) -> TurnStream:
        """Hold the session for one turn (a message, a redo, or decisions) and return the stream that runs it."""
        if not session_id.isprintable() or len(session_id) > SESSION_ID_CHARS:
            raise SessionNotFound(f"session ids are at most {SESSION_ID_CHARS} printable characters")
        self.access.claim(session_id, owner)
        if session_id in self._running:
            raise SessionBusy(f"session {session_id!r} is answering a message; send the next one when it has answered")
        store = SessionStore(self.settings.sessions_location)
        known = store.team_of(session_id)
        if known is not None and known != served.name:
            store.close()
            raise SessionNotFound(f"session {session_id!r} belongs to another team")
        try:
            store.lease(session_id)
        except SessionBusyError as exc:
            store.close()
            raise SessionBusy(str(exc)) from None
        self._running.add(session_id)

        def release() -> None:  # idempotent: the session is free again, and its lease with the store
            self._running.discard(session_id)
            store.close()

        run_id = uuid.uuid4().hex[:12]
        try:
            if decisions is not None:  # checked under the lease: no other worker decides them meanwhile
                paused = store.awaiting(session_id)
                pending = [] if paused is None else [PendingCall.model_validate(p) for p in paused[2]["pending"]]
                try:
                    check_decisions(pending, decisions)
                except HuddleError as exc:
                    raise DecisionsRefused(str(exc)) from None
                if self._temporal is not None and paused is not None:
                    run_id = paused[0].run_id  # a workflow's run goes on under its id, which the turn's record finds
            budget = self.access.budget(owner, session_id, self.settings.budget)
        except BaseException:
            release()  # refused (the key has no budget left, or the decisions do not fit): the turn never began
            raise
        turn = Admitted(session_id, run_id, served, task, decisions, store, budget)
        return TurnStream(session_id, run_id, served.name, TurnEvents(self._run(turn, release), release), budget)

    async def _run(self, turn: Admitted, release: Callable[[], None]) -> AsyncGenerator[TeamEvent, None]:
        """The admitted turn on the settings' engine, to its end; the session freed and the observers told however
        it ends."""
        started, outcome = time.monotonic(), "cancelled"
        new = turn.task is not None or turn.decisions is not None  # not a crashed turn's redo
        try:
            events = self._local(turn) if self._temporal is None else self._temporal.turn(turn)
            async with aclosing(events):
                async for event in events:
                    if event.kind == "result" and new:
                        outcome = _outcome(event)
                    yield event
        except Exception:
            outcome = "failed"
            raise
        finally:
            release()
            if new:
                ended = TurnEnd(turn.served.name, turn.session_id, turn.run_id, outcome, time.monotonic() - started)
                for observe in self.observers:
                    observe(ended)

    async def _local(self, turn: Admitted) -> AsyncGenerator[TeamEvent, None]:
        """The turn in this process: the team built, restored from the session store, run, saved and closed."""
        session_id, run_id, task, decisions, budget = (
            turn.session_id,
            turn.run_id,
            turn.task,
            turn.decisions,
            turn.budget,
        )
        settings = self.settings.model_copy(update={"budget": budget})
        team: Team | None = None
        try:
            team = build_team(turn.served.spec, settings, ledger=self.ledger, session_id=session_id)
            durable = DurableTeam(team, turn.store, session_id)
            unfinished = await durable.open()
            if unfinished is not None and decisions is None:
                # A turn a crash interrupted is redone once before the new message, so the conversation keeps its
                # order; its events are not this turn's (a client reading them would take them for its answer).
                redo = durable.resume(unfinished, run_id=uuid.uuid4().hex[:12])
                async for item in redo:
                    if task is None:
                        event = describe(item)
                        if event is not None:
                            yield event
            items = (
                durable.approve(decisions, run_id=run_id)
                if decisions is not None
                else (durable.run_stream(task, run_id=run_id) if task is not None else None)
            )
            if items is not None:
                planned = team
                async for event in self.events(items, lambda: _steps(planned), run_id, budget):
                    yield event
        finally:
            if team is not None:
                await team.close()

    async def events(
        self,
        items: AsyncIterator[Event | RunResult | MessageRecord],
        steps: Callable[[], list[dict[str, object]] | None],
        run_id: str,
        budget: Budget,
    ) -> AsyncIterator[TeamEvent]:
        """The run's `TeamEvent` s, with the plan's steps and how far each has got (`steps`: on the plan, and on any
        later event after which they changed), the ``approval`` before a paused run's ``result``, and the meter
        after every message. The one shaping of a run's items every engine's turn goes through."""
        shown: list[dict[str, object]] | None = None
        async for item in items:
            event = describe(item)
            if event is None:
                continue
            if event.kind == "result" and event.data.get("pending"):
                yield TeamEvent("approval", event.source, data={"pending": event.data["pending"]})
            now = steps()
            if now is not None and event.kind in ("plan", "tool_calls", "message") and now != shown:
                event = TeamEvent(event.kind, event.source, event.text, {**event.data, "steps": now})
                shown = now
            yield event
            if event.kind in ("message", "plan", "tool_calls", "speaker"):
                yield self.meter(run_id, budget)

    def meter(self, run_id: str, budget: Budget | None = None) -> TeamEvent:
        """The run's calls, tokens and dollars so far, and the limits of `budget` (a key's own folded in; the
        settings' when None) they count against."""
        totals = self.ledger.totals(run_id=run_id)
        data: dict[str, object] = {
            "run_id": run_id,
            "calls": totals.calls,
            "prompt_tokens": totals.prompt_tokens,
            "completion_tokens": totals.completion_tokens,
            "cost_usd": totals.cost_usd,
        }
        limit = (budget or self.settings.budget).run
        if limit.max_usd:
            data["max_usd"] = limit.max_usd
        if limit.max_tokens:
            data["max_tokens"] = limit.max_tokens
        return TeamEvent("usage", data=data)

    async def resume_unfinished(self) -> list[str]:
        """Redo, once, every served session's turn that a crash (of this server or another worker) left unfinished;
        returns the sessions redone. Sessions another worker holds are left to it. On the Temporal engine there are
        none: a workflow finishes its turns itself, whichever worker runs it."""
        if self._temporal is not None:
            return []
        redone = []
        for summary in self.sessions(None, everyone=True):
            if not summary.unfinished:
                continue
            try:
                stream = await self.turn(summary.team, None, session_id=summary.id)
            except SessionBusy:
                continue
            async for _ in stream.events:
                pass
            redone.append(summary.id)
        return redone

    def sessions(self, owner: str | None, *, everyone: bool = False) -> list[SessionSummary]:
        """The sessions `owner` may reopen, newest first, of teams served here."""
        with SessionStore(self.settings.sessions_location) as store:
            summaries = store.sessions()
        mine = [s for s in summaries if s.team in self.teams and (everyone or self.access.owns(s.id, owner))]
        return sorted(mine, key=lambda s: s.updated, reverse=True)

    def turns(self, session_id: str, owner: str | None) -> list[Turn]:
        """A session's turns, for reopening it; `SessionNotFound` if it is not `owner`'s or does not exist."""
        if not self.access.owns(session_id, owner):
            raise SessionNotFound(f"no session {session_id!r}")
        with SessionStore(self.settings.sessions_location) as store:
            if store.team_of(session_id) is None:
                raise SessionNotFound(f"no session {session_id!r}")
            return store.turns(session_id)

    @property
    def busy(self) -> int:
        """Turns running now (for readiness and graceful shutdown)."""
        return len(self._running)

    def close(self) -> None:
        self.ledger.close()


def served_teams(teams: Sequence[str | Path]) -> dict[str, ServedTeam]:
    """The teams to serve, by name, loaded from preset names or YAML paths; a mistake is a `ConfigError` naming it."""
    served: dict[str, ServedTeam] = {}
    for reference in teams:
        spec = load_any_team(reference)
        if spec.team.name in served:  # clients pick a team by name: a second one would silently replace the first
            raise ConfigError(
                f"{str(reference)!r}: another served team is already named {spec.team.name!r}; give each served team "
                "its own `team.name`"
            )
        served[spec.team.name] = _served(spec)
    return served


def _outcome(result: TeamEvent) -> str:
    """How a turn ended, for the metrics: ``awaiting_approval`` is neither done nor failed."""
    if result.data.get("stop_reason") == AWAITING and result.data.get("pending"):
        return AWAITING
    return "done" if result.text else "failed"


def _steps(team: Team) -> list[dict[str, object]] | None:
    """The plan's steps with their status, None before there is a plan."""
    plan, status = team.state.plan, team.state.status
    if plan is None:
        return None
    return [{**step.model_dump(), "status": status.get(step.id, "pending")} for step in plan.steps]


def _served(spec: TeamSpec | PatternSpec) -> ServedTeam:
    if isinstance(spec, TeamSpec):
        members = tuple(Member(a.agent_name, a.agent_description) for a in spec.agents)
        kind = "group chat"
    else:
        members = tuple(Member(m.name, m.description or m.instruction or m.name) for m in spec.members())
        kind = spec.team.kind.replace("_", "-")
    names = ", ".join(m.name for m in members)
    return ServedTeam(spec.team.name, spec, f"huddle {kind} team {spec.team.name} ({names})", members)
