"""``huddle ask``, ``huddle run`` and ``huddle chat``: the commands that call a model or a team.

Registered on the root app by `huddle.cli.app`. The model stack, autogen and the teams load inside each command, so
``huddle --help`` stays fast.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Annotated

import typer

from huddle.cli.options import (
    CacheOption,
    EngineOption,
    MaxTokensOption,
    MaxUsdOption,
    ModelOption,
    QuietOption,
    TaskArgument,
    TeamOption,
    VerboseOption,
    err,
    not_blank,
    out,
    team_settings,
    verbosity,
    with_engine,
)

if TYPE_CHECKING:
    from huddle.config.settings import Settings
    from huddle.teams.base import RunResult


def ask_command(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="What to ask the model.", callback=not_blank)],
    system: Annotated[str | None, typer.Option("--system", help="A system prompt.")] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Print the reply as it arrives.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print answer and usage as JSON.")] = False,
) -> None:
    """Ask the active model profile one question directly (one metered call, no team)."""
    import asyncio

    from huddle.models.ask import ask

    settings = ctx.obj.settings()
    profile = settings.profile()
    run_id = uuid.uuid4().hex[:12]
    live = stream and not as_json

    def show(chunk: str) -> None:
        out.print(chunk, end="", markup=False, highlight=False, soft_wrap=True)

    answer, record = asyncio.run(
        ask(prompt, profile, settings.ledger_location, system=system, run_id=run_id, on_chunk=show if live else None)
    )
    if as_json:
        print(json.dumps({"answer": answer, "run_id": run_id, "usage": record.model_dump()}, indent=2))
        return
    out.print(answer, markup=False, highlight=False) if not live else out.print()
    err.print(
        f"[dim]{record.profile} · {record.model} · {record.prompt_tokens} prompt + {record.completion_tokens} "
        f"completion tokens ({record.token_source}) · ${record.cost_usd:.6f} · {record.latency_s:.2f} s · "
        f"run {run_id}[/dim]"
    )


def run_command(
    ctx: typer.Context,
    task: TaskArgument = None,
    team: TeamOption = "assistant",
    model: ModelOption = None,
    max_usd: MaxUsdOption = None,
    max_tokens: MaxTokensOption = None,
    cache: CacheOption = None,
    engine: EngineOption = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Continue (or start) a durable session with this id.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Redo the session's turn a crash interrupted.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: answer, usage, ...")] = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Run one task on a team and print the answer (or, with --json, everything about the run).

    A run that gives no answer prints one ``error:`` line and exits 1 (after the JSON, with --json); a run whose tool
    calls wait for approval prints them and exits 3 (``huddle approve`` goes on); Ctrl-C cancels it and exits 130."""
    import asyncio

    from huddle.cli.approvals import report_run
    from huddle.cli.console import Interrupted, exit_interrupted, run_once
    from huddle.teams.kinds import load_any_team

    if resume and not session:
        raise typer.BadParameter("--resume needs --session ID")
    if task is None and not resume:
        raise typer.BadParameter("give a TASK (or --session ID --resume)")
    level = verbosity(quiet, verbose)
    settings = with_engine(team_settings(ctx, model, max_usd, max_tokens, cache), engine)
    if settings.engine == "temporal":
        if resume or task is None:
            raise typer.BadParameter("--resume is for the local engine: a Temporal session resumes by itself")
        result = asyncio.run(_on_temporal(settings, team, task, session))
        report_run(result, as_json=as_json, level=level, session_id=result.session_id, streamed=False)
        return
    spec = load_any_team(team)

    async def run_or_exit() -> RunResult:
        try:
            return await run_once(
                spec,
                settings,
                task,
                show=None if as_json else out,
                session_id=session,
                resume=resume,
                notices=err,
                verbosity=level,
                status=err if err.is_terminal else None,
            )
        except Interrupted:
            exit_interrupted(err)

    report_run(asyncio.run(run_or_exit()), as_json=as_json, level=level, session_id=session)


async def _on_temporal(settings: Settings, team: str, task: str, session_id: str | None) -> RunResult:
    """One turn of a session on the Temporal engine (a new session unless `session_id` names one)."""
    from huddle.engines.temporal.sessions import TemporalSession

    session = await TemporalSession.open(settings, team, session_id)
    result = await session.run(task)
    if session_id is None and not result.pending:  # a one-off run: nothing will come back to it
        await session.close()
    return result


def chat_command(
    ctx: typer.Context,
    team: TeamOption = "assistant",
    model: ModelOption = None,
    max_usd: MaxUsdOption = None,
    max_tokens: MaxTokensOption = None,
    cache: CacheOption = None,
    engine: EngineOption = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Resume this session (a new id starts one); saved every turn.")
    ] = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Chat with a team. Commands: /help, /cost, /plan, /session, /exit. Ctrl-C cancels a turn; the chat stays open.

    Piped input: one message per line; the chat exits 1 at the end of input if any turn failed."""
    import asyncio

    from huddle.cli.repl import chat
    from huddle.teams.kinds import load_any_team

    level = verbosity(quiet, verbose)
    settings = with_engine(team_settings(ctx, model, max_usd, max_tokens, cache), engine)
    if settings.engine == "temporal":
        from huddle.cli.temporal_chat import chat_on_temporal

        if code := asyncio.run(chat_on_temporal(settings, team, session, out, err)):
            raise typer.Exit(code)
        return
    code = asyncio.run(
        chat(
            load_any_team(team),
            settings,
            session_id=session,
            console=out,
            errors=err,
            verbosity=level,
            team_option=team,
        )
    )
    if code:
        raise typer.Exit(code)
