"""What ``huddle run`` and ``huddle chat`` show: speakers' messages as they arrive, the answer streamed, a cost meter.

Kept apart from `huddle.cli` so the CLI module stays light: this one imports the team stack.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator

from autogen_agentchat.messages import BaseChatMessage, ModelClientStreamingChunkEvent
from rich.console import Console
from rich.markup import escape

from huddle.errors import HuddleError
from huddle.sessions import SessionStore
from huddle.settings import Settings
from huddle.teams.durable import DurableTeam
from huddle.teams.group_chat import Event, RunResult
from huddle.teams.kinds import PatternSpec
from huddle.teams.patterns import build_team
from huddle.teams.spec import TeamSpec
from huddle.usage import UsageLedger, usage_scope

CHAT_COMMANDS = "/cost  /plan  /exit"
_LEVEL_COLOURS = {"ok": "dim", "soft": "yellow", "hard": "red"}  # the meter past the budget's soft and hard limits


class Transcript:
    """Prints one run's events: other agents' messages dimmed and labelled, the responder's answer streamed."""

    def __init__(self, console: Console, responder: str, *, verbose: bool) -> None:
        self.console, self.responder, self.verbose = console, responder, verbose
        self._streaming = False

    def show(self, item: Event) -> None:
        if isinstance(item, ModelClientStreamingChunkEvent) and item.source == self.responder:
            if not self._streaming:
                self.console.print(f"[bold green]{self.responder}>[/bold green] ", end="")
                self._streaming = True
            self.console.print(item.content, end="", markup=False, highlight=False)
        elif isinstance(item, BaseChatMessage) and item.source == self.responder:
            if self._streaming:
                self.console.print()
            else:
                self.console.print(f"[bold green]{self.responder}>[/bold green] {escape(item.to_text())}")
            self._streaming = False
        elif isinstance(item, BaseChatMessage) and item.source != "user" and self.verbose:
            self.console.print(f"[cyan]{item.source}>[/cyan] [dim]{escape(item.to_text())}[/dim]")


def meter(result: RunResult, session: UsageLedger | None = None, session_id: str | None = None) -> str:
    """One line: this run's tokens, calls and dollars (and the session's, in a chat)."""
    line = (
        f"{result.usage.total_tokens} tokens ({result.usage.prompt_tokens} in / {result.usage.completion_tokens} out) "
        f"· {result.usage.calls} model calls · ${result.usage.cost_usd:.6f} · stop: {result.stop_reason}"
    )
    if session is not None and session_id is not None:
        total = session.totals(session_id=session_id)
        line += f" · session {total.total_tokens} tokens ${total.cost_usd:.6f}"
    return line


async def run_once(
    spec: TeamSpec | PatternSpec,
    settings: Settings,
    task: str | None,
    *,
    show: Console | None,
    session_id: str | None = None,
    resume: bool = False,
    notices: Console | None = None,
) -> RunResult:
    """Run one task (and, with `resume`, first the session's unfinished turn); print the transcript to `show`.

    Without a session the team is fresh; with one, it continues the session's conversation and is saved per turn.
    """
    ledger = UsageLedger(settings.ledger_path)
    team = build_team(spec, settings, ledger=ledger, session_id=session_id)
    transcript = Transcript(show, team.responder, verbose=True) if show else None
    store = SessionStore(settings.sessions_path) if session_id else None
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
            async for item in turn:
                if isinstance(item, RunResult):
                    result = item
                elif transcript:
                    transcript.show(item)
    finally:
        await team.close()
        ledger.close()
        if store:
            store.close()
    if result is None:
        raise HuddleError("nothing to run: give a task, or --resume a session with an unfinished turn")
    return result


async def chat(spec: TeamSpec | PatternSpec, settings: Settings, *, session_id: str | None, console: Console) -> None:
    """The REPL. On a terminal: a prompt, streamed answers, a meter. Piped: one message per line, answers printed."""
    interactive = sys.stdin.isatty()
    session_id = session_id or uuid.uuid4().hex[:12]
    ledger = UsageLedger(settings.ledger_path)
    team = build_team(spec, settings, ledger=ledger, session_id=session_id)
    store = SessionStore(settings.sessions_path)
    durable = DurableTeam(team, store, session_id)
    transcript = Transcript(console, team.responder, verbose=interactive)
    if interactive:
        console.print(f"[bold]huddle chat[/bold] · team {spec.team.name} · session {session_id} · {CHAT_COMMANDS}")
    try:
        unfinished = await durable.open()
        if unfinished is not None:
            console.print(f"[yellow]redoing turn {unfinished.turn}, interrupted: {escape(unfinished.task)}[/yellow]")
            async for item in durable.resume(unfinished):
                if not isinstance(item, RunResult):
                    transcript.show(item)
        while True:
            line = await asyncio.to_thread(_read_line, "you> " if interactive else "")
            if line is None or line.strip() == "/exit":
                break
            text = line.strip()
            if not text:
                continue
            if text == "/cost":
                console.print(_session_cost(ledger, session_id))
            elif text == "/plan":
                plan = team.state.plan
                console.print(escape(plan.describe()) if plan else "No plan yet.")
            elif text.startswith("/"):
                console.print(f"unknown command {escape(text)}; commands: {CHAT_COMMANDS}")
            else:
                async for item in durable.run_stream(text):
                    if isinstance(item, RunResult):
                        if interactive:
                            with usage_scope(run_id=item.run_id, session_id=session_id):
                                colour = _LEVEL_COLOURS[team.governor.level()]
                            console.print(f"[{colour}]{meter(item, ledger, session_id)}[/{colour}]")
                    else:
                        transcript.show(item)
    finally:
        await team.close()
        ledger.close()
        store.close()


def _read_line(prompt: str) -> str | None:
    try:
        return input(prompt) if prompt else (sys.stdin.readline() or None)
    except EOFError:
        return None


def _session_cost(ledger: UsageLedger, session_id: str) -> str:
    lines = [f"session {session_id}:"]
    for agent, totals in ledger.by("agent", session_id=session_id).items():
        lines.append(f"  {agent:14} {totals.calls:3} calls {totals.total_tokens:7} tokens ${totals.cost_usd:.6f}")
    total = ledger.totals(session_id=session_id)
    lines.append(f"  {'total':14} {total.calls:3} calls {total.total_tokens:7} tokens ${total.cost_usd:.6f}")
    return "\n".join(lines)
