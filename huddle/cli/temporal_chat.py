"""``huddle chat --engine temporal``: a plain line-by-line chat whose turns are Updates of the session's workflow.

One message per line (typed or piped); ``/exit`` (or the end of input) leaves. The session's workflow keeps running
after the chat ends, on whichever workers are up: ``--session ID`` joins it again from any host.
"""

from __future__ import annotations

import sys

from rich.console import Console

from huddle.cli.approvals import show_pending
from huddle.cli.console import failure, meter
from huddle.config.settings import Settings

EXIT = {"/exit", "/quit"}


async def chat_on_temporal(
    settings: Settings, team: str, session_id: str | None, console: Console, errors: Console
) -> int:
    """Run the chat; 1 when a turn gave no answer (as the in-process chat does for piped input), else 0."""
    from huddle.engines.temporal.sessions import TemporalSession

    session = await TemporalSession.open(settings, team, session_id)
    errors.print(f"session {session.session_id} on Temporal ({settings.temporal.address}); /exit leaves", markup=False)
    failed = False
    for line in sys.stdin:
        message = line.strip()
        if message in EXIT:
            break
        if not message:
            continue
        result = await session.run(message)
        if result.answer:
            console.print(result.answer, markup=False, highlight=False)
        errors.print(f"[dim]{meter(result)} · run {result.run_id}[/dim]")
        if result.pending:
            show_pending(errors, result, session.session_id)
        elif (reason := failure(result)) is not None:
            errors.print(f"error: {reason}", markup=False)
            failed = True
    return 1 if failed else 0
