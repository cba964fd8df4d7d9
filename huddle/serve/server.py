"""``huddle serve`` on uvicorn: one process or N workers on one data directory, and a graceful stop.

Workers are separate processes (uvicorn spawns them), so each builds its own app from an import string and a
factory (`worker_app`); what the command was given (settings, teams, CORS origins, the drain time) reaches them as
one JSON environment variable. Every worker opens the same stores; the session store's lease keeps one session on
one worker at a time, so a second message on a busy session gets 409 whichever worker takes it.

Stopping (SIGTERM, or Ctrl-C): uvicorn stops accepting and waits for the responses in progress, the app's lifespan
waits for the turns in progress (`huddle.serve.ops.drain`), and ``/readyz`` says 503 meanwhile. At the drain's deadline
the process ends at once rather than cancel what still runs: those turns stay ``running`` in the session store and
the next start redoes each once, where a cancelled turn would be lost. Ending at the deadline exits with status 1.

With ``engine: temporal`` the turns run on ``huddle worker`` processes (`huddle.serve.temporal_turns`), so N server
workers are N front ends of the same sessions; the server refuses to start when the Temporal service does not answer.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from pydantic import BaseModel
from starlette.applications import Starlette
from uvicorn.config import LOGGING_CONFIG
from uvicorn.supervisors import Multiprocess

from huddle.config.settings import Settings
from huddle.engines import require_temporal
from huddle.errors import UsageError
from huddle.serve import keys, ops
from huddle.serve.application import app
from huddle.serve.hub import Hub, served_teams

WORKER_ENV = "HUDDLE_SERVE_WORKER"
"""The environment variable a worker reads what to serve from (JSON of `WorkerSpec`)."""
_GAVE_UP = 1


class WorkerSpec(BaseModel):
    """What every worker process serves: the command's settings, teams and options."""

    settings: dict[str, Any]
    config_file: Path | None
    teams: list[str]
    cors_origins: list[str]
    drain_s: float
    keys: bool
    """Whether requests need API keys (`keys.required` decided, once, before any worker started)."""


def serve(
    settings: Settings,
    teams: Sequence[str | Path] = ("assistant",),
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    cors_origins: Sequence[str] = (),
    drain_s: float = ops.DRAIN_S,
) -> None:
    """Serve `teams` at http://HOST:PORT until SIGTERM or Ctrl-C; prints the URL once the port is bound.

    Team files are read here first, so a mistake in one is reported before any worker starts; on the Temporal engine
    (``engine: temporal``) the service is reached first too (`TemporalUnavailable`, one line, when it does not answer).
    """
    served_teams(teams)
    if settings.engine == "temporal":
        require_temporal()
        from huddle.serve import temporal_turns

        temporal_turns.check(settings)
    spec = WorkerSpec(
        settings=settings.model_dump(mode="json"),
        config_file=settings.config_file,
        teams=[str(team) for team in teams],
        cors_origins=list(cors_origins),
        drain_s=drain_s,
        keys=keys.required(settings, host),  # off loopback without keys: refused here, before any worker starts
    )
    os.environ[WORKER_ENV] = spec.model_dump_json()
    config = uvicorn.Config(
        f"{__name__}:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        lifespan="on",
        access_log=False,  # `ops.AccessLog` writes the access log, as JSON
        log_config=_log_config(),
        timeout_graceful_shutdown=None,  # the drain's own deadline ends the process; uvicorn would cancel turns
    )
    try:
        sock = config.bind_socket()
    except SystemExit:  # uvicorn has logged why (the port is taken, the address is not this machine's)
        raise UsageError(f"cannot listen on {host}:{port}; choose another --port or --host") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"huddle serve: http://{shown}:{bound} ({', '.join(spec.teams)}; {workers} worker(s))", flush=True)
    if workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])


def worker_app() -> Starlette:
    """The app one worker serves (uvicorn's factory), from `WORKER_ENV`; it drains on SIGTERM/SIGINT."""
    spec = WorkerSpec.model_validate_json(os.environ[WORKER_ENV])
    settings = Settings.model_validate(spec.settings)
    settings.config_file = spec.config_file
    access = keys.KeyAccess.of(settings) if spec.keys else None
    application = app(settings, spec.teams, access=access, cors_origins=spec.cors_origins)
    _drain_on_signal(application.state.hub, spec.drain_s)
    return application


def _drain_on_signal(hub: Hub, drain_s: float) -> None:
    """On the first SIGTERM/SIGINT, mark the hub draining and start the clock that ends the process at the deadline,
    then let uvicorn's own handler (installed before the app is built) stop the server."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only (an app built elsewhere is stopped by its owner)
    deadline = threading.Timer(drain_s, _give_up, args=(hub, drain_s))
    deadline.daemon = True
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            ops.mark_draining(hub, drain_s)
            if not deadline.is_alive():
                deadline.start()
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)


def _give_up(hub: Hub, drain_s: float) -> None:
    """The drain's deadline passed: end now, leaving the turns still running for the next start to redo."""
    sys.stderr.write(
        f"huddle serve: {hub.busy} turn(s) still running after {drain_s:g} s; they stay unfinished in the session "
        "store and the next start redoes them\n"
    )
    sys.stderr.flush()
    os._exit(_GAVE_UP)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, plus huddle's: the access log as bare JSON lines on stdout, warnings on stderr."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["json"] = {"format": "%(message)s"}
    config["handlers"]["json"] = {"formatter": "json", "class": "logging.StreamHandler", "stream": "ext://sys.stdout"}
    config["loggers"][ops.ACCESS_LOGGER] = {"handlers": ["json"], "level": "INFO", "propagate": False}
    config["loggers"]["huddle"] = {"handlers": ["default"], "level": "WARNING", "propagate": False}
    return config
