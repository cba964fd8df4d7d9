"""``huddle serve`` on the Temporal engine (``engine: temporal``): each turn an Update of the session's workflow, run
by ``huddle worker`` processes on any hosts, instead of a team built in the server's process.

The `Hub` admits a turn the same way on either engine (its owner, the session held in this process and leased in
the session store, the decisions checked against the paused turn the store holds, the key's budget) and hands it
here. A turn joins the session's workflow (or starts it, for the served team's name, which every worker knows its
teams by) and sends the message (`TemporalSession.run`) or the decisions (`TemporalSession.resume`) under the hub's
run id. An Update returns whole, so the turn's events (its messages, the ``approval`` of a paused run, the
``result``) all arrive when it ends, shaped by the hub's one `Hub.events`, exactly as the local engine's are; the
meter reads the shared ledger the workers write each model call into.

The workers record every turn in the shared session store (`huddle.engines.temporal.records`), which is what the
endpoints read a session's turns, its paused calls (`Hub.pending`) and a stateless client's session from. A new
message on a paused session is the workflow's to read: a customer's answer to the waiting calls takes the paused run
up, anything else drops it (in the store too, when the new turn is recorded). The key's budget (`Access.budget`)
goes with each Update and holds that run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence

from temporalio.service import RPCError

from huddle.config.settings import Settings
from huddle.engines.temporal.connection import TemporalUnavailable, connect
from huddle.engines.temporal.sessions import TemporalSession, UpdateRefused
from huddle.errors import HuddleError
from huddle.serve.events import TeamEvent
from huddle.serve.hub import Admitted, DecisionsRefused
from huddle.teams.managed_chat import Event
from huddle.teams.results import MessageRecord, RunResult
from huddle.usage.budget import Budget

Shape = Callable[
    [AsyncIterator[Event | RunResult | MessageRecord], Callable[[], list[dict[str, object]] | None], str, Budget],
    AsyncIterator[TeamEvent],
]
"""`Hub.events`: a run's items as the `TeamEvent` s every endpoint maps from."""


class EngineUnavailable(HuddleError):
    """The Temporal service did not take the turn (it is down, or refused the call); nothing ran."""

    status = 503


class TurnFailed(HuddleError):
    """The session's workflow refused or failed the turn (its Update failed on the worker)."""

    status = 502


class TemporalTurns:
    """Runs the turns a `Hub` admits on the Temporal engine of `settings` (``temporal:`` in huddle.yaml)."""

    def __init__(self, settings: Settings, shape: Shape) -> None:
        self.settings = settings
        self._shape = shape

    async def turn(self, turn: Admitted) -> AsyncGenerator[TeamEvent, None]:
        """One admitted turn (a message, or decisions) of the served team, its events once it has ended. A turn with
        neither (`Hub.resume_unfinished`'s redo) has nothing to do: a workflow finishes its own turns."""
        task, decisions, run_id, budget = turn.task, turn.decisions, turn.run_id, turn.budget
        if task is None and decisions is None:
            return
        try:
            session = await TemporalSession.open(self.settings, turn.served.name, turn.session_id)
            if decisions is not None:
                result = await session.resume(decisions, run_id=run_id, budget=budget)
            else:
                assert task is not None  # returned above for neither
                result = await session.run(task, run_id=run_id, budget=budget)
        except TemporalUnavailable as exc:
            raise EngineUnavailable(str(exc)) from None
        except RPCError as exc:  # refused, or the service went away while the Update waited
            where = self.settings.temporal.address
            raise EngineUnavailable(f"the Temporal service at {where} did not take the turn: {exc.message}") from None
        except UpdateRefused as exc:  # checked against the store first: the workflow disagreed, and it decides
            raise DecisionsRefused(str(exc)) from None
        except HuddleError as exc:  # the run raised, or the session's workflow failed
            raise TurnFailed(f"the turn failed on the Temporal engine: {exc}") from None
        async for event in self._shape(_items([*result.messages, result]), _no_steps, run_id, budget):
            yield event


def check(settings: Settings) -> None:
    """`TemporalUnavailable` (one line naming temporal.address) unless the service answers: a server checks once,
    before it listens, rather than failing its first message. Outside an event loop."""
    asyncio.run(connect(settings))


async def _items(items: Sequence[RunResult | MessageRecord]) -> AsyncIterator[RunResult | MessageRecord]:
    for item in items:
        yield item


def _no_steps() -> list[dict[str, object]] | None:
    """The plan's steps with their status are the workflow's team's, which the caller does not see; the plan's own
    message still shows the plan."""
    return None
