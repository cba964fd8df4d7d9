"""Why an agent spoke and what each step cost: spans per run, agent turn, model call, tool call and manager decision.

Spans always go to a JSONL run log (``DATA_DIR/runs/<run_id>.jsonl``, one line per finished span: id, parent, name,
kind, start, end, attributes, status), which ``huddle trace RUN_ID`` prints as a tree. When
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set they are also exported as OpenTelemetry spans over OTLP/gRPC, with the same
attributes (tokens, cost, model, cached, policy, ...). Tracing follows the run through contextvars, so code deep in a
run (the metering client, the tool executor, the manager) adds spans with `span`/`event` and no tracer argument;
outside a traced run those calls do nothing. Attribute values pass through `redact`.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huddle.secrets import redact

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
Attributes = Mapping[str, str | int | float | bool | None]


@dataclass
class Span:
    """An open span; attributes may be added until it ends."""

    id: str
    parent: str | None
    name: str
    kind: str
    start: float
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None
    otel: Any = None  # the mirrored OpenTelemetry span, when exporting

    def set(self, **attributes: Any) -> None:
        self.attributes.update(attributes)

    def fail(self, error: str) -> None:
        self.status, self.error = "error", redact(error)[:500]


class RunLog:
    """Appends finished spans of one run to its JSONL file, and mirrors them to OpenTelemetry when enabled."""

    def __init__(self, directory: Path, run_id: str) -> None:
        _ensure_directory(directory)
        self.path = directory / f"{run_id}.jsonl"
        self.run_id = run_id
        self._lock = threading.Lock()
        self._otel = _otel_tracer()
        # Kept open for the run (opening it per span cost ~2 ms a turn); line-buffered, so a crash loses no span.
        self._out = self.path.open("a", encoding="utf-8", buffering=1)

    def close(self) -> None:
        with self._lock:
            self._out.close()

    def open(self, span: Span, parent: Span | None) -> None:
        """Start the OpenTelemetry twin of `span` under its parent's, so the exported spans nest like ours."""
        if self._otel is None:
            return
        from opentelemetry import trace

        context = trace.set_span_in_context(parent.otel) if parent is not None and parent.otel is not None else None
        span.otel = self._otel.start_span(span.name, context=context, start_time=int(span.start * 1e9))

    def write(self, span: Span, end: float) -> None:
        attributes = {k: _clean(v) for k, v in span.attributes.items() if v is not None}
        record = {
            "id": span.id,
            "parent": span.parent,
            "run_id": self.run_id,
            "name": span.name,
            "kind": span.kind,
            "start": span.start,
            "end": end,
            "attributes": attributes,
            "status": span.status,
            "error": span.error,
        }
        with self._lock:
            if self._out.closed:  # a straggler finishing after its run's trace ended
                self._out = self.path.open("a", encoding="utf-8", buffering=1)
            self._out.write(json.dumps(record) + "\n")
        if span.otel is not None:
            from opentelemetry.trace import Status, StatusCode

            span.otel.set_attributes({"huddle.kind": span.kind, "huddle.run_id": self.run_id, **attributes})
            if span.status == "error":
                span.otel.set_status(Status(StatusCode.ERROR, span.error or ""))
            span.otel.end(end_time=int(end * 1e9))


_log: ContextVar[RunLog | None] = ContextVar("huddle_run_log", default=None)
_parent: ContextVar[Span | None] = ContextVar("huddle_span", default=None)


@contextmanager
def trace_run(directory: Path, run_id: str, **attributes: Any) -> Iterator[Span]:
    """Trace everything in this context as run `run_id`, under one ``run`` span."""
    log = RunLog(directory, run_id)
    token = _log.set(log)
    try:
        with span(f"run {run_id}", "run", run_id=run_id, **attributes) as root:
            yield root
    finally:
        _log.reset(token)
        log.close()


@contextmanager
def span(name: str, kind: str, **attributes: Any) -> Iterator[Span]:
    """A span under the current one; an exception marks it failed (and propagates). No-op outside a traced run."""
    log = _log.get()
    parent = _parent.get()
    current = Span(_span_id(), parent.id if parent else None, name, kind, time.time(), dict(attributes))
    if log is None:
        yield current
        return
    log.open(current, parent)
    token = _parent.set(current)
    try:
        yield current
    except BaseException as exc:
        current.fail(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _parent.reset(token)
        log.write(current, time.time())


def event(name: str, kind: str, *, start: float | None = None, error: str | None = None, **attributes: Any) -> None:
    """A finished span recorded after the fact (a model call's, from its ledger row; a manager decision)."""
    log = _log.get()
    if log is None:
        return
    parent = _parent.get()
    now = time.time()
    record = Span(_span_id(), parent.id if parent else None, name, kind, start or now, dict(attributes))
    log.open(record, parent)
    if error:
        record.fail(error)
    log.write(record, now)


def read_run(directory: Path, run_id: str) -> list[dict[str, Any]]:
    """The spans of one run, in the order they finished."""
    path = directory / f"{run_id}.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _span_id() -> str:
    """16 random hex digits, like the uuid4 prefix it replaces at a fifth of the cost (a few are made per turn)."""
    return secrets.token_hex(8)


def _ensure_directory(directory: Path) -> None:
    """Create the run-log directory when missing: one stat per run, where ``mkdir(exist_ok=True)`` raised and caught
    an exception every time."""
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


_otel_lock = threading.Lock()
_otel_state: dict[str, Any] = {}


def _otel_tracer() -> Any:
    """An OpenTelemetry tracer exporting over OTLP/gRPC when the endpoint variable is set (set up once per endpoint)."""
    endpoint = os.environ.get(OTLP_ENDPOINT_ENV)
    if not endpoint:
        return None
    with _otel_lock:
        if _otel_state.get("endpoint") != endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor

            provider = TracerProvider(resource=Resource.create({"service.name": "huddle"}))
            provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
            _otel_state.update(endpoint=endpoint, tracer=provider.get_tracer("huddle"))
        return _otel_state["tracer"]
