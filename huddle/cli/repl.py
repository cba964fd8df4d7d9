"""``huddle chat``: the REPL around a durable session.

On a terminal, lines are read with prompt_toolkit (line editing, history kept in the data directory across chats);
keys typed while the team works are dropped, so a stray Enter never sends a half-typed line as the next message.
Ctrl-C cancels the turn at work (the session records it ``cancelled``; the chat goes on), Ctrl-D or ``/exit`` leaves.
Piped stdin is read line by line as bytes and decoded as UTF-8 with replacement, so no input can crash the chat; at
its end the chat exits 1 if any turn failed.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import BinaryIO, Protocol

from rich.console import Console
from rich.markup import escape

from huddle.agents.approval import ApprovalDecision, PendingCall
from huddle.cli.approvals import decisions_for, show_pending
from huddle.cli.console import Interrupted, Transcript, Verbosity, failure, meter, print_error, run_turn
from huddle.config.settings import Settings
from huddle.errors import HuddleError
from huddle.secrets import redact
from huddle.storage.sessions import SessionStore
from huddle.teams.base import RunResult, Team, build_team
from huddle.teams.durable import DurableTeam
from huddle.teams.kinds import PatternSpec
from huddle.teams.managed_chat import Event
from huddle.teams.spec import TeamSpec
from huddle.usage import UsageLedger, usage_scope

PROMPT = "you> "
COMMANDS = {
    "/help": "these commands",
    "/cost": "this session's calls, tokens and dollars, per agent",
    "/plan": "the plan of the last turn",
    "/session": "this session's id, and how to come back to it",
    "/exit": "leave (also /quit or Ctrl-D); the session is saved",
}
_LEVEL_COLOURS = {"ok": "dim", "soft": "yellow", "hard": "red"}  # the meter past the budget's soft and hard limits


class Lines(Protocol):
    """Where the chat's messages come from."""

    async def read(self) -> str | None:
        """The next line without its line ending; None at the end of input."""
        ...

    def during_run(self) -> AbstractContextManager[None]:
        """Held while a turn runs."""
        ...


class PipedLines:
    """Lines of a pipe or file, decoded as UTF-8 with replacement: bytes that are not UTF-8 become U+FFFD."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    async def read(self) -> str | None:
        raw = await asyncio.to_thread(self._stream.readline)
        return raw.decode("utf-8", errors="replace").rstrip("\r\n") if raw else None

    def during_run(self) -> AbstractContextManager[None]:
        return nullcontext()


class TerminalLines:
    """A prompt_toolkit prompt with line editing and a history file."""

    def __init__(self, history: Path) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory

        history.parent.mkdir(parents=True, exist_ok=True)
        self._session: PromptSession[str] = PromptSession(history=FileHistory(str(history)))

    async def read(self) -> str | None:
        while True:
            try:
                return await self._session.prompt_async(PROMPT)
            except KeyboardInterrupt:  # Ctrl-C at the prompt clears the line, as in a shell
                continue
            except EOFError:
                return None

    @contextmanager
    def during_run(self) -> Iterator[None]:
        """Keys typed while the team works are not echoed, and are thrown away before the next prompt: the
        terminal's pending input and what prompt_toolkit read ahead past the last Enter."""
        from prompt_toolkit.input.typeahead import clear_typeahead

        with _no_echo():
            yield
        clear_typeahead(self._session.input)


@contextmanager
def _no_echo() -> Iterator[None]:
    """Echo off on the terminal for the block (Ctrl-C still signals); its unread input dropped at the end."""
    if sys.platform == "win32":
        yield
        return
    import termios

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    quiet = list(saved)
    quiet[3] &= ~termios.ECHO  # the local modes
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcflush(fd, termios.TCIFLUSH)
        termios.tcsetattr(fd, termios.TCSANOW, saved)


class Chat:
    """One `huddle chat`: a team, its durable session, and what it prints."""

    def __init__(
        self,
        team: Team,
        durable: DurableTeam,
        ledger: UsageLedger,
        *,
        out: Console,
        errors: Console,
        verbosity: Verbosity,
        interactive: bool,
        resume_command: str,
    ) -> None:
        self.team, self.durable, self.ledger = team, durable, ledger
        self.out, self.errors, self.verbosity, self.interactive = out, errors, verbosity, interactive
        self.resume_command = resume_command
        self.session_id: str = durable.session_id
        self.failed = False  # a turn failed: piped input then ends with exit code 1
        status = errors if interactive and errors.is_terminal else None
        self.transcript = Transcript(out, team.responder, verbosity=verbosity, status=status, team=team.spec.team.name)

    async def loop(self, lines: Lines) -> None:
        """Redo a turn a crash left unfinished, then answer lines until /exit or the end of input."""
        unfinished = await self.durable.open()
        if unfinished is not None:
            self.out.print(f"[yellow]redoing turn {unfinished.turn}, interrupted: {escape(unfinished.task)}[/yellow]")
            with lines.during_run():
                result = await self.turn(self.durable.resume(unfinished))
            await self.settle(result, lines)
        while (line := await lines.read()) is not None:
            text = line.strip()
            if text in ("/exit", "/quit"):
                return
            if text.startswith("/"):
                self.command(text)
            elif text:
                with lines.during_run():
                    result = await self.turn(self.durable.run_stream(text))
                await self.settle(result, lines)

    async def turn(self, stream: AsyncIterator[Event | RunResult]) -> RunResult | None:
        """Run one turn and say how it ended: the meter, an error line, or that it was cancelled."""
        try:
            result = await run_turn(stream, self.transcript)
        except Interrupted:
            self.errors.print("[yellow]cancelled[/yellow] [dim](the session records this turn as cancelled)[/dim]")
            return None
        except Exception as error:  # the team raised: say what, and keep the chat usable
            self._failed(str(error) if isinstance(error, HuddleError) else f"{type(error).__name__}: {error}")
            return None
        if (reason := failure(result)) is not None:
            self._failed(reason)
        elif self.interactive and self.verbosity != "quiet":
            self._meter(result)
        return result

    async def settle(self, result: RunResult | None, lines: Lines) -> None:
        """Tool calls that wait for approval: on a terminal, ask about each (y / n / e / ?) and go on with the run;
        from a pipe, print them (``huddle approve`` can decide later) and go on with the next line."""
        while result is not None and result.pending:
            if not self.interactive:
                show_pending(self.errors, result, self.session_id)
                return
            decisions = {call.id: await self._ask(call) for call in result.pending}
            with lines.during_run():
                result = await self.turn(self.durable.approve(decisions))

    async def _ask(self, call: PendingCall) -> ApprovalDecision:
        """One call's decision, asked at the terminal until the answer is y, n or a valid e."""
        self.out.print(
            f"[yellow]{escape(call.agent)} wants to run {escape(call.tool)}[/yellow] ({escape(call.reason)})"
        )
        while True:
            answer = (await asyncio.to_thread(input, "approve? [y]es / [n]o / [e]dit / [?] details: ")).strip().lower()
            if answer in ("y", "yes"):
                return ApprovalDecision.approve(by="cli")
            if answer in ("n", "no"):
                reason = await asyncio.to_thread(input, "reason (Enter: denied by the user): ")
                return ApprovalDecision.deny(reason.strip(), by="cli")
            if answer in ("e", "edit"):
                try:
                    return decisions_for([call], call.id, None, await asyncio.to_thread(input, "arguments (JSON): "))[
                        call.id
                    ]
                except HuddleError as error:
                    print_error(self.errors, str(error))
            else:
                self.out.print(json.dumps(call.model_dump(), indent=2), markup=False, highlight=False)

    def _failed(self, reason: str) -> None:
        self.failed = True
        print_error(self.errors, " ".join(redact(reason).split()))

    def _meter(self, result: RunResult) -> None:
        with usage_scope(run_id=result.run_id, session_id=self.session_id):
            colour = _LEVEL_COLOURS[self.team.governor.level()]
        self.out.print(f"[{colour}]{meter(result, self.ledger, self.session_id)}[/{colour}]")

    def command(self, text: str) -> None:
        name = text.split()[0]
        if name == "/help":
            width = max(map(len, COMMANDS))
            for command, what in COMMANDS.items():
                self.out.print(f"  {command:{width}}  {what}", highlight=False)
            self.out.print("  Ctrl-C cancels the turn at work; the chat stays open.", highlight=False)
        elif name == "/cost":
            self.out.print(_session_cost(self.ledger, self.session_id), highlight=False)
        elif name == "/plan":
            plan = self.team.state.plan
            self.out.print(escape(plan.describe()) if plan else "No plan yet.")
        elif name == "/session":
            self.out.print(f"session {self.session_id}; to continue it later: {self.resume_command}", highlight=False)
        else:
            self.out.print(f"unknown command {escape(name)}; /help lists the commands", highlight=False)


async def chat(
    spec: TeamSpec | PatternSpec,
    settings: Settings,
    *,
    session_id: str | None,
    console: Console,
    errors: Console,
    verbosity: Verbosity = "normal",
    team_option: str = "assistant",
) -> int:
    """The REPL (see the module docstring). Returns the exit code: 1 when input was piped and a turn failed."""
    interactive = sys.stdin.isatty()
    session_id = session_id or uuid.uuid4().hex[:12]
    team_flag = "" if team_option == "assistant" else f" --team {shlex.quote(team_option)}"
    ledger = UsageLedger(settings.ledger_location)
    team = build_team(spec, settings, ledger=ledger, session_id=session_id)
    store = SessionStore(settings.sessions_location)
    session = Chat(
        team,
        DurableTeam(team, store, session_id),
        ledger,
        out=console,
        errors=errors,
        verbosity=verbosity,
        interactive=interactive,
        resume_command=f"huddle chat{team_flag} --session {session_id}",
    )
    lines: Lines = TerminalLines(settings.history_path) if interactive else PipedLines(sys.stdin.buffer)
    if interactive:
        console.print(f"[bold]huddle chat[/bold] · team {spec.team.name} · session {session_id} · /help for commands")
    try:
        await session.loop(lines)
    finally:
        await team.close()
        ledger.close()
        store.close()
    return 1 if session.failed and not interactive else 0


def _session_cost(ledger: UsageLedger, session_id: str) -> str:
    lines = [f"session {session_id}:"]
    for agent, totals in ledger.by("agent", session_id=session_id).items():
        lines.append(f"  {agent:14} {totals.calls:3} calls {totals.total_tokens:7} tokens ${totals.cost_usd:.6f}")
    total = ledger.totals(session_id=session_id)
    lines.append(f"  {'total':14} {total.calls:3} calls {total.total_tokens:7} tokens ${total.cost_usd:.6f}")
    return "\n".join(lines)
