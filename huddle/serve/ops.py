"""What an operator needs from a running server: health, readiness, Prometheus metrics, one JSON access log line
per request, and a drain that lets the turns in progress finish before the process ends.

- ``/healthz``: the process answers (a liveness probe: restart it when this fails).
- ``/readyz``: the hub is open and its stores answer; 503 while draining, so a load balancer stops sending new
  work before the process goes (a readiness probe).
- ``/metrics``: runs by team and outcome, model calls, tokens, cost and latency by team/agent/model, read from the
  ledger rows of each finished turn (the same rows ``huddle usage`` reads, so the two always agree). Each app has its
  own `CollectorRegistry`: two apps in one process (tests, a user's server) never share or clash on counters. With
  ``--workers N`` each worker counts its own turns, like any multi-process Prometheus target.
- The access log (`AccessLog`) is pure ASGI so it never buffers a stream; a line is written when the response ends
  (for a stream, when its last event is sent), and holds no header, query string or key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from huddle.errors import HuddleError
from huddle.secrets import redact
from huddle.serve.hub import Hub, TurnEnd
from huddle.storage.sessions import SessionStore

DRAIN_S = 30.0
"""How long a stopping server lets its turns in progress run before it leaves them for the next start to redo."""
SESSION_HEADER = "x-huddle-session"
ACCESS_LOGGER = "huddle.serve.access"
_RUN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_POLL_S = 0.05

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)
# When each draining hub must have let go of its turns (monotonic time); a hub not in here is not draining.
_draining: weakref.WeakKeyDictionary[Hub, float] = weakref.WeakKeyDictionary()


class Metrics:
    """The server's Prometheus metrics in a registry of its own, fed by the hub as each turn ends."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter("huddle_runs", "Turns run, by team and outcome.", ["team", "outcome"], registry=r)
        self.run_seconds = Histogram(
            "huddle_run_seconds", "Turn latency, admission to end.", ["team"], buckets=_RUN_BUCKETS, registry=r
        )
        labels = ["team", "agent", "model"]
        self.calls = Counter("huddle_model_calls", "Model calls.", labels, registry=r)
        self.call_errors = Counter("huddle_model_call_errors", "Model calls that failed.", labels, registry=r)
        self.tokens = Counter("huddle_tokens", "Tokens, prompt or completion.", [*labels, "kind"], registry=r)
        self.cost = Counter("huddle_cost_usd", "Dollars spent on model calls.", labels, registry=r)
        self.call_seconds = Histogram(
            "huddle_model_call_seconds", "Model call latency.", labels, buckets=_CALL_BUCKETS, registry=r
        )
        running = Gauge("huddle_turns_running", "Turns running in this process now.", registry=r)
        running.set_function(lambda: hub.busy)
        hub.observers.append(self.observe)

    def observe(self, ended: TurnEnd) -> None:
        """Count one ended turn and its model calls; a ledger that cannot be read costs the calls' figures, never
        the turn (its answer has been sent)."""
        self.runs.labels(ended.team, ended.outcome).inc()
        self.run_seconds.labels(ended.team).observe(ended.seconds)
        try:
            records = self.hub.ledger.records(run_id=ended.run_id)
        except HuddleError as exc:
            log.warning("metrics: the calls of run %s are not counted (%s)", ended.run_id, exc)
            return
        for record in records:
            labels = (ended.team, record.agent, record.model)
            self.calls.labels(*labels).inc()
            if record.error:
                self.call_errors.labels(*labels).inc()
            self.tokens.labels(*labels, "prompt").inc(record.prompt_tokens)
            self.tokens.labels(*labels, "completion").inc(record.completion_tokens)
            self.cost.labels(*labels).inc(record.cost_usd)
            self.call_seconds.labels(*labels).observe(record.latency_s)


def routes(hub: Hub) -> list[BaseRoute]:
    """``/healthz``, ``/readyz`` and ``/metrics``."""
    metrics = Metrics(hub)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        if hub in _draining:
            return JSONResponse({"status": "draining", "running": hub.busy}, status_code=503)
        problem = _stores_problem(hub)
        if problem is not None:
            return JSONResponse({"status": "unavailable", "reason": problem}, status_code=503)
        return JSONResponse({"status": "ready", "teams": list(hub.teams), "running": hub.busy})

    async def scrape(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
    ]


def _stores_problem(hub: Hub) -> str | None:
    """Why a turn could not run now (a store that does not answer), or None. The details go to the log only: a
    probe's answer is public."""
    try:
        hub.ledger.totals(run_id="readyz")
    except HuddleError as exc:
        log.warning("readyz: the usage ledger does not answer: %s", exc)
        return "the usage ledger does not answer"
    try:
        with SessionStore(hub.settings.sessions_location) as store:
            store.team_of("readyz")
    except HuddleError as exc:
        log.warning("readyz: the session store does not answer: %s", exc)
        return "the session store does not answer"
    return None


def middleware(hub: Hub) -> list[Middleware]:
    """The access log, outermost, so every answer is logged, the other middleware's refusals (401, 413) included."""
    return [Middleware(AccessLog)]


class AccessLog:
    """One JSON line per HTTP request on the ``huddle.serve.access`` logger: method, path, status, duration_ms and the
    session id when the request or its answer names one (the ``X-Huddle-Session`` header). Written when the response
    has ended, so a stream's duration is its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before it answered (Starlette's error page)
        session = _header(scope.get("headers", []), SESSION_HEADER)

        async def sending(message: Message) -> None:
            nonlocal status, session
            if message["type"] == "http.response.start":
                status = message["status"]
                session = _header(message.get("headers", []), SESSION_HEADER) or session
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            line: dict[str, object] = {
                "method": scope["method"],
                "path": redact(scope["path"]),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            }
            if session:
                line["session_id"] = redact(session)
            access_log.info(json.dumps(line))


def _header(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    wanted = name.encode()
    for key, value in headers:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


def mark_draining(hub: Hub, timeout_s: float = DRAIN_S) -> None:
    """The server is stopping: ``/readyz`` answers 503 from now on, and `drain` waits at most `timeout_s` from now."""
    _draining.setdefault(hub, time.monotonic() + timeout_s)


async def drain(hub: Hub, resuming: asyncio.Task[list[str]]) -> None:
    """Let the turns in progress (and the redo of the ones a crash left) finish, until the drain's deadline.

    Nothing is cancelled: a turn still running at the deadline stays ``running`` in the session store, and the next
    start redoes it once (`Hub.resume_unfinished`); cancelling it would record it ``cancelled``, which is never redone.
    ``huddle serve`` ends the process at the deadline (`huddle.serve.server`)."""
    mark_draining(hub)
    deadline = _draining[hub]
    while (not resuming.done() or hub.busy) and time.monotonic() < deadline:
        await asyncio.sleep(_POLL_S)
    if resuming.done() and not resuming.cancelled() and resuming.exception() is not None:
        log.warning("redoing the turns a crash left unfinished failed: %s", resuming.exception())
