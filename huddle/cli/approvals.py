"""``huddle approve`` and how every command shows tool calls that wait for a person's approval.

A run that pauses for approvals exits 3 (`ExitCode.AWAITING_APPROVAL`) with its pending calls printed; its session
keeps everything needed to go on, so ``huddle approve SESSION`` (any process, any time before the approval expires)
approves, denies or edits them and prints the answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from huddle.cli.options import (
    EngineOption,
    QuietOption,
    TeamOption,
    VerboseOption,
    err,
    out,
    team_settings,
    verbosity,
    with_engine,
)
from huddle.errors import ExitCode, HuddleError, UsageError

if TYPE_CHECKING:
    from huddle.agents.approval import ApprovalDecision, PendingCall
    from huddle.cli.console import Verbosity
    from huddle.config.settings import Settings
    from huddle.teams.base import RunResult
    from huddle.teams.kinds import PatternSpec
    from huddle.teams.spec import TeamSpec

    Decide = Callable[[list[PendingCall]], dict[str, ApprovalDecision]]


def show_pending(console: Console, result: RunResult, session_id: str | None) -> None:
    """One line per call that waits, then how to go on (or, without a session, that nothing can)."""
    for call in result.pending:
        args = json.dumps(call.args, ensure_ascii=False)
        console.print(
            f"[yellow]awaiting approval[/yellow] {call.id}: {escape(call.agent)} wants {escape(call.tool)}"
            f"({escape(args)}) for step {call.step_id}: {escape(call.reason)}",
            highlight=False,
            soft_wrap=True,
        )
    if session_id:
        console.print(f"approve with: huddle approve {session_id} [CALL_ID] [--deny REASON] [--args JSON]")
    else:
        console.print("this run cannot be resumed: run it with --session ID to approve its calls later")


def report_run(
    result: RunResult, *, as_json: bool, level: Verbosity, session_id: str | None, streamed: bool = True
) -> None:
    """What `huddle run` and `huddle approve` print once the run ends: the JSON (or, when nothing `streamed` the
    answer as it was written, the answer a Temporal run returns whole; then the meter line), then the pending calls
    and exit 3 when it paused, or one ``error:`` line (exit 1) when it gave no answer."""
    from huddle.cli.console import failure, meter

    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        if not streamed and result.answer:
            out.print(result.answer, markup=False, highlight=False)
        if level != "quiet":
            err.print(f"[dim]{meter(result)} · run {result.run_id}[/dim]")
    exit_awaiting(err, result, session_id)
    if (reason := failure(result)) is not None:
        raise HuddleError(reason)


def exit_awaiting(console: Console, result: RunResult, session_id: str | None) -> None:
    """Print the pending calls and exit 3, when the run paused for approvals."""
    if result.pending:
        show_pending(console, result, session_id)
        raise typer.Exit(ExitCode.AWAITING_APPROVAL)


def decisions_for(
    pending: list[PendingCall], call_id: str | None, deny: str | None, args: str | None
) -> dict[str, ApprovalDecision]:
    """The command line's decision: for `call_id` (or every pending call when none is given), approve, deny with a
    reason, or edit the arguments (a JSON object, for one call)."""
    from huddle.agents.approval import ApprovalDecision

    if deny is not None and args is not None:
        raise UsageError("give --deny or --args, not both")
    chosen = [p.id for p in pending] if call_id is None else [call_id]
    if args is not None:
        if len(chosen) != 1:
            raise UsageError(f"--args edits one call: give its CALL_ID ({', '.join(chosen)})")
        try:
            edited: Any = json.loads(args)
        except ValueError as exc:
            raise UsageError(f"--args: not valid JSON ({exc})") from None
        if not isinstance(edited, dict):
            raise UsageError("--args: give a JSON object of the tool's arguments")
        return {chosen[0]: ApprovalDecision.edit(edited, by="cli")}
    if deny is not None:
        return {c: ApprovalDecision.deny(deny, by="cli") for c in chosen}
    return {c: ApprovalDecision.approve(by="cli") for c in chosen}


def approve_command(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="The session whose run waits for approval.")],
    call_id: Annotated[str | None, typer.Argument(help="The pending call to decide; all of them when omitted.")] = None,
    deny: Annotated[
        str | None, typer.Option("--deny", help="Deny the call(s); the reason is the tool's result.")
    ] = None,
    args: Annotated[str | None, typer.Option("--args", help="Run the call with these arguments (JSON).")] = None,
    team: TeamOption = "assistant",
    engine: EngineOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: answer, usage, ...")] = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Approve (or --deny, or edit with --args) the tool calls a session's run waits for, and go on with the run.

    Prints the answer (exit 0), or exits 3 again if the run asks for more approvals."""
    import asyncio

    from huddle.cli.console import Interrupted, exit_interrupted
    from huddle.teams.kinds import load_any_team

    level = verbosity(quiet, verbose)
    settings = with_engine(team_settings(ctx, None, None, None, None), engine)
    if settings.engine == "temporal":
        decide = lambda pending: decisions_for(pending, call_id, deny, args)  # noqa: E731
        result = asyncio.run(_approve_on_temporal(settings, session, decide))
        report_run(result, as_json=as_json, level=level, session_id=session, streamed=False)
        return
    spec = load_any_team(team)

    async def resume() -> RunResult:
        try:
            return await _resume(
                spec,
                settings,
                session,
                lambda p: decisions_for(p, call_id, deny, args),
                level,
                show=None if as_json else out,
            )
        except Interrupted:
            exit_interrupted(err)

    report_run(asyncio.run(resume()), as_json=as_json, level=level, session_id=session)


async def _approve_on_temporal(
    settings: Settings, session_id: str, decide: Callable[[list[PendingCall]], dict[str, ApprovalDecision]]
) -> RunResult:
    """The decisions for the calls a Temporal session waits on (its workflow's `pending` query), as its Update."""
    from huddle.engines.temporal.sessions import TemporalSession

    session = await TemporalSession.join(settings, session_id)
    pending = await session.pending()
    if not pending:
        raise HuddleError(f"session {session_id!r} has no tool call waiting for approval")
    return await session.resume(decide(pending))


async def _resume(
    spec: TeamSpec | PatternSpec,
    settings: Settings,
    session: str,
    decide: Decide,
    level: Verbosity,
    *,
    show: Console | None,
) -> RunResult:
    """Open the session, take up its paused turn with the decisions `decide` makes of its pending calls."""
    from huddle.cli.console import Transcript, run_turn
    from huddle.storage.sessions import SessionStore
    from huddle.teams.base import build_team
    from huddle.teams.durable import DurableTeam
    from huddle.usage import UsageLedger

    ledger = UsageLedger(settings.ledger_location)
    store = SessionStore(settings.sessions_location)
    team = build_team(spec, settings, ledger=ledger, session_id=session)
    try:
        owner = store.team_of(session)
        if owner is None:
            raise HuddleError(f"no session {session!r}")
        if owner != spec.team.name:
            raise UsageError(f"session {session!r} belongs to team {owner!r}: give --team for it")
        durable = DurableTeam(team, store, session)
        await durable.open()
        transcript = (
            Transcript(show, team.responder, verbosity=level, status=None, team=spec.team.name) if show else None
        )
        return await run_turn(durable.approve(decide(team.state.pending)), transcript)
    finally:
        await team.close()
        ledger.close()
        store.close()
