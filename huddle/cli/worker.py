"""``huddle worker`` and ``huddle dev-server``: the Temporal engine's worker, and a local Temporal to try it on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from huddle.cli.options import err
from huddle.engines import TEMPORAL_MISSING


def worker_command(
    ctx: typer.Context,
    team: Annotated[
        list[str] | None,
        typer.Option("--team", "-t", help="A preset or team file this worker serves (repeatable; default assistant)."),
    ] = None,
) -> None:
    """Run a Temporal worker for huddle's sessions on the configured task queue (Ctrl-C stops it).

    Start as many as you like, on any hosts, with the same huddle.yaml and team files: they share the sessions."""
    import asyncio

    try:
        from huddle.engines.temporal.worker import run_worker
    except ImportError:
        err.print(f"error: {TEMPORAL_MISSING}", markup=False)
        raise typer.Exit(2) from None
    settings = ctx.obj.settings()
    where = settings.temporal
    err.print(f"huddle worker: task queue {where.task_queue!r} on {where.address} ({where.namespace})", markup=False)
    try:
        asyncio.run(run_worker(settings, team or []))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def dev_server_command(
    db_file: Annotated[Path, typer.Option("--db-file", help="Where the server keeps its state.")] = Path(
        "temporal-dev.sqlite"
    ),
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="The frontend's port (temporal.address).")
    ] = 7233,
) -> None:
    """Start a local Temporal dev server on 127.0.0.1 (offline; its state survives restarts in --db-file)."""
    temporal = shutil.which("temporal")
    if temporal is None:
        err.print(f"error: {TEMPORAL_MISSING}", markup=False)
        raise typer.Exit(2)
    command = [temporal, "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port)]
    command += ["--db-filename", str(db_file), "--log-level", "warn"]
    command += ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
    try:
        raise typer.Exit(subprocess.call(command))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
