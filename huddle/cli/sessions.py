"""``huddle sessions``: list, show and delete the durable chat sessions that ``run --session`` and ``chat`` keep.

Registered on the root app as ``app.add_typer(sessions_app, name="sessions")``; the session store loads inside each
command.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from huddle.cli.options import JsonOption, out
from huddle.errors import HuddleError

sessions_app = typer.Typer(help="Durable chat sessions: list, show, delete.", no_args_is_help=True)
SessionArgument = Annotated[str, typer.Argument(help="The session id.")]


@sessions_app.command("list")
def sessions_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Sessions, most recent first, with their turn counts and unfinished turns."""
    from huddle.storage.sessions import SessionStore

    with SessionStore(ctx.obj.settings().sessions_location) as store:
        rows = [s.model_dump() for s in store.sessions()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        unfinished = f" ({row['unfinished']} unfinished)" if row["unfinished"] else ""
        out.print(f"{row['id']}  team {row['team']}  {row['turns']} turns{unfinished}", highlight=False)


@sessions_app.command("show")
def sessions_show(ctx: typer.Context, session_id: SessionArgument, as_json: JsonOption = False) -> None:
    """A session's turns: each user message, the answer, and (with --json) every message and decision."""
    from huddle.storage.sessions import SessionStore

    with SessionStore(ctx.obj.settings().sessions_location) as store:
        turns = store.turns(session_id)
    if not turns:
        raise HuddleError(f"no session {session_id!r} (see `huddle sessions list`)")
    if as_json:
        print(json.dumps([t.model_dump() for t in turns], indent=2))
        return
    for turn in turns:
        out.print(f"[bold]turn {turn.turn}[/bold] ({turn.status}, run {turn.run_id}) you> {turn.task}", highlight=False)
        if turn.answer is not None:
            out.print(f"  answer> {turn.answer}", markup=False, highlight=False)


@sessions_app.command("delete")
def sessions_delete(ctx: typer.Context, session_id: SessionArgument) -> None:
    """Delete a session and its turns (its usage stays in the ledger)."""
    from huddle.storage.sessions import SessionStore

    with SessionStore(ctx.obj.settings().sessions_location) as store:
        deleted = store.delete(session_id)
    if not deleted:
        raise HuddleError(f"no session {session_id!r}")
    out.print(f"deleted session {session_id}")
