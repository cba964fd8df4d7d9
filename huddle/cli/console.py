"""What ``huddle run`` and ``huddle chat`` show while a team works: who is thinking (a spinner on stderr), the other
speakers' messages, the answer streamed, a cost meter, and one ``error:`` line when a run gives no answer.

Kept apart from `huddle.cli` so the CLI module stays light: this one imports the team stack. The chat REPL is in
`huddle.cli.repl`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, contextmanager
from typing import Literal, NoReturn

from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    ModelClientStreamingChunkEvent,
    SelectSpeakerEvent,
)
from rich.console import Console, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.text import Text

from huddle.config.settings import Settings
from huddle.errors import HuddleError
from huddle.models.streaming import STREAM_RESET
from huddle.secrets import redact
from huddle.storage.sessions import SessionStore
from huddle.teams.base import RunResult, build_team
from huddle.teams.durable import DurableTeam
from huddle.teams.kinds import PatternSpec
from huddle.teams.managed_chat import Event
from huddle.teams.spec import TeamSpec
from huddle.usage import UsageLedger

Verbosity = Literal["quiet", "normal", "verbose"]
"""quiet: the answer only. normal: the answer, other speakers' messages dimmed (internal notes hidden), a spinner
and the meter. verbose: every event, the manager's decisions (policy and reason) and internal notes included."""


class Interrupted(Exception):
    """The user pressed Ctrl-C during a turn, and the turn was cancelled."""


def is_internal(message: BaseChatMessage) -> bool:
    """A note for the trace, not for the user (the memory agent's "nothing relevant recalled", a planner's fallback):
    the agent that posts it marks it ``metadata["internal"] = "true"``."""
    return message.metadata.get("internal") == "true"


class _Thinking:
    """The spinner's line, rendered afresh at each refresh so the elapsed time counts up."""

    def __init__(self) -> None:
        self.label = ""
        self.since = time.monotonic()
        self._spinner = Spinner("dots")

    def __rich__(self) -> RenderableType:
        self._spinner.update(text=Text(f"{self.label} thinking… {time.monotonic() - self.since:.1f} s", style="dim"))
        return self._spinner


class Transcript:
    """Prints one run's events at a `Verbosity`, and names the agent at work on a spinner while nothing is printed.

    `status` is where the spinner goes (stderr on a terminal), None for none. The spinner is cleared before anything
    is printed and comes back, naming whoever works next, until the answer starts.
    """

    def __init__(
        self, console: Console, responder: str, *, verbosity: Verbosity, status: Console | None, team: str
    ) -> None:
        self.console, self.responder, self.verbosity, self.team = console, responder, verbosity, team
        self._streaming = False
        self.answered = False  # the answer was shown (streamed or whole); else the run's result prints it
        self._thinking = _Thinking()
        self._live = (
            Live(
                self._thinking,
                console=status,
                transient=True,
                refresh_per_second=10,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            if status is not None and verbosity != "quiet"
            else None
        )

    def show(self, item: Event) -> None:
        if isinstance(item, ModelClientStreamingChunkEvent):
            if item.source == self.responder:
                self._stream(item.content)
        elif isinstance(item, SelectSpeakerEvent):
            if self.verbosity == "verbose":
                self._decision(item)
            self._spin(", ".join(item.content))
        elif isinstance(item, BaseChatMessage):
            if item.source != self.responder:
                if item.source != "user":
                    self._message(item)
                self._spin(self.team)  # the team decides who speaks next
            elif item.metadata.get("kind") != "failure":
                self._answer(item)
            elif self.verbosity == "verbose":  # else the run's error line says it
                self._message(item)
        elif self.verbosity == "verbose":
            self._event(item)
            self._spin(item.source)  # still at work

    def close(self) -> None:
        """End the run's output: the spinner cleared, a streamed answer's line ended."""
        self._stop_spinner()
        if self._streaming:
            self.console.print()
            self._streaming = False

    def _stream(self, text: str) -> None:
        if text == STREAM_RESET:  # a retry said something else: the line shown so far ends, the answer starts again
            if self._streaming:
                self.console.print()
                self._streaming = False
            return
        if not self._streaming:
            self._stop_spinner()
            if self.verbosity != "quiet":
                self.console.print(f"[bold green]{self.responder}>[/bold green] ", end="")
            self._streaming = self.answered = True
        self.console.print(text, end="", markup=False, highlight=False)

    def _answer(self, message: BaseChatMessage) -> None:
        self._stop_spinner()
        if self._streaming:
            self.console.print()
            self._streaming = False
        else:
            self.final(message.to_text())

    def final(self, answer: str, source: str | None = None) -> None:
        """Print the answer whole. `source` names who gave it when that is not the responder: a run stopped early
        (a budget stop in a pipeline) answers with the last output it got, which no responder message carried."""
        self._stop_spinner()
        self.answered = True
        if self.verbosity == "quiet":
            self.console.print(answer, markup=False, highlight=False)
        else:
            self.console.print(f"[bold green]{escape(source or self.responder)}>[/bold green] {escape(answer)}")

    def _message(self, message: BaseChatMessage) -> None:
        if self.verbosity == "quiet" or (is_internal(message) and self.verbosity != "verbose"):
            return
        self._stop_spinner()
        note = " (note)" if is_internal(message) else ""
        self.console.print(f"[cyan]{escape(message.source)}{note}>[/cyan] [dim]{escape(message.to_text())}[/dim]")

    def _decision(self, event: SelectSpeakerEvent) -> None:
        self._stop_spinner()
        why = event.metadata
        detail = f" ({why['policy']}: {why.get('reason', '')})" if "policy" in why else ""
        self.console.print(f"[magenta]manager>[/magenta] [dim]{escape(', '.join(event.content) + detail)}[/dim]")

    def _event(self, event: BaseAgentEvent) -> None:
        self._stop_spinner()
        self.console.print(f"[dim]{escape(event.source)} · {type(event).__name__}: {escape(event.to_text())}[/dim]")

    def _spin(self, label: str) -> None:
        if self._live is None or self._streaming:
            return
        if label != self._thinking.label or not self._live.is_started:
            self._thinking.label, self._thinking.since = label, time.monotonic()
        if not self._live.is_started:
            self._live.start()

    def _stop_spinner(self) -> None:
        if self._live is not None and self._live.is_started:
            self._live.stop()


def failure(result: RunResult) -> str | None:
    """Why a run gave no answer, on one line (its ``error: ...`` stop reason without the prefix); None if it answered.

    The engine's contract: a run that cannot answer returns ``answer == ""`` and a stop reason starting ``error:``.
    An empty answer without one is a failure all the same; a run waiting for approvals (``result.pending``) has no
    answer yet and is not one."""
    if result.answer or result.pending:
        return None
    reason = result.stop_reason
    reason = reason.removeprefix("error:").strip() if reason.startswith("error:") else f"no answer (stop: {reason})"
    return " ".join(redact(reason).split())


def print_error(console: Console, reason: str) -> None:
    """The one ``error: ...`` line, as the CLI prints a `HuddleError`."""
    console.print(f"[red]error:[/red] {escape(reason)}", highlight=False, soft_wrap=True)


def meter(result: RunResult, session: UsageLedger | None = None, session_id: str | None = None) -> str:
    """One line: this run's tokens, calls and dollars (and the session's, in a chat)."""
    stop = "no answer" if failure(result) else f"stop: {result.stop_reason}"  # a failure's reason has its own line
    line = (
        f"{result.usage.total_tokens} tokens ({result.usage.prompt_tokens} in / {result.usage.completion_tokens} out) "
        f"· {result.usage.calls} model calls · ${result.usage.cost_usd:.6f} · {stop}"
    )
    if session is not None and session_id is not None:
        total = session.totals(session_id=session_id)
        line += f" · session {total.total_tokens} tokens ${total.cost_usd:.6f}"
    return line


async def run_turn(stream: AsyncIterator[Event | RunResult], transcript: Transcript | None) -> RunResult:
    """Consume one turn's stream in a task of its own, which Ctrl-C cancels: the team's run stops where it is
    awaiting (a model call's HTTP request is closed), and `Interrupted` is raised here at once."""
    loop = asyncio.get_running_loop()
    consumer = asyncio.ensure_future(_consume(stream, transcript))
    interrupted = False

    def cancel() -> None:
        nonlocal interrupted
        if not interrupted:  # a second Ctrl-C must not cut short the cancelled turn's clean-up
            interrupted = True
            consumer.cancel()

    try:
        with _on_ctrl_c(loop, cancel):
            return await consumer
    except asyncio.CancelledError:
        if interrupted:
            raise Interrupted from None
        raise
    finally:
        if transcript is not None:
            transcript.close()


async def _consume(stream: AsyncIterator[Event | RunResult], transcript: Transcript | None) -> RunResult:
    result: RunResult | None = None
    if transcript is not None:
        transcript.answered = False  # one transcript shows every turn of a chat
    async with aclosing(stream):  # type: ignore[type-var]  # an async generator, typed as AsyncIterator
        async for item in stream:
            if isinstance(item, RunResult):
                result = item
            elif transcript is not None:
                transcript.show(item)
    if result is None:
        raise RuntimeError("the team's run ended without a result")
    if transcript is not None and result.answer and not transcript.answered:
        transcript.final(result.answer, source=f"answer ({result.stop_reason})")
    return result


@contextmanager
def _on_ctrl_c(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> Iterator[None]:
    """Ctrl-C calls `callback` inside this block, then SIGINT goes back to its previous handler (asyncio.run's,
    which cancels the whole program). Where the loop cannot take signal handlers (Windows, a thread other than the
    main one) Ctrl-C keeps its usual effect."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, callback)
    except (NotImplementedError, RuntimeError, ValueError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def exit_interrupted(console: Console) -> NoReturn:
    """Say so in one line and exit 130 now. Not through the interpreter's shutdown, which waits for worker threads:
    a call into the embedded model cannot be interrupted and would hold the process until it ends (seconds)."""
    console.print("interrupted: the run was cancelled")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


async def run_once(
    spec: TeamSpec | PatternSpec,
    settings: Settings,
    task: str | None,
    *,
    show: Console | None,
    session_id: str | None = None,
    resume: bool = False,
    notices: Console | None = None,
    verbosity: Verbosity = "normal",
    status: Console | None = None,
) -> RunResult:
    """Run one task (and, with `resume`, first the session's unfinished turn); print the transcript to `show` and
    the spinner to `status`. Ctrl-C cancels the turn and raises `Interrupted`, after the team is closed.

    Without a session the team is fresh; with one, it continues the session's conversation and is saved per turn.
    """
    ledger = UsageLedger(settings.ledger_location)
    team = build_team(spec, settings, ledger=ledger, session_id=session_id)
    transcript = (
        Transcript(show, team.responder, verbosity=verbosity, status=status, team=spec.team.name) if show else None
    )
    store = SessionStore(settings.sessions_location) if session_id else None
    result: RunResult | None = None
    try:
        durable = DurableTeam(team, store, session_id) if store and session_id else None
        unfinished = await durable.open() if durable else None
        if unfinished is not None and not resume and notices is not None:
            notices.print(f"[yellow]turn {unfinished.turn} of this session never finished; --resume redoes it[/yellow]")
        turns: list[AsyncIterator[Event | RunResult]] = []
        if durable and unfinished and resume:
            turns.append(durable.resume(unfinished))
        if task is not None:
            turns.append(durable.run_stream(task) if durable else team.run_stream(task))
        for turn in turns:
            result = await run_turn(turn, transcript)
    finally:
        await team.close()
        ledger.close()
        if store:
            store.close()
    if result is None:
        raise HuddleError("nothing to run: give a task, or --resume a session with an unfinished turn")
    return result
