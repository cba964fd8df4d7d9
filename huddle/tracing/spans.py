"""Why an agent spoke and what each step cost: OpenTelemetry spans per run, agent turn, model call, tool call and
manager decision.

Every span goes to its run's log (``DATA_DIR/runs/<run_id>.jsonl``, or the shared database with ``database_url``:
`huddle.tracing.runlog`), which ``huddle trace RUN_ID`` prints as a tree, and over OTLP when the standard ``OTEL_*``
variables ask for it (`huddle.tracing.export`); names follow the GenAI semantic conventions
(`huddle.tracing.conventions`). Tracing follows the run through OpenTelemetry's context (contextvars), so code deep
in a run (the metering client, the tool executor, the manager) adds spans with `span`/`event` and no tracer argument;
outside a traced run those calls do nothing. A nested team's run is a span in its parent's trace and log. Attribute
values pass through `redact`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from huddle import effects
from huddle.secrets import redact
from huddle.tracing.conventions import KIND, OPERATIONS, RUN_ID, attributes
from huddle.tracing.export import tracing
from huddle.tracing.runlog import RunLog

_ERROR_CHARS = 500


class Span:
    """An open span (or, outside a traced run, nothing); attributes may be added until it ends."""

    def __init__(self, kind: str, otel: trace.Span | None = None) -> None:
        self.kind, self.otel = kind, otel

    def set(self, **values: Any) -> None:
        if self.otel is not None:
            self.otel.set_attributes(_clean(self.kind, values))

    def fail(self, error: str) -> None:
        if self.otel is not None:
            self.otel.set_status(Status(StatusCode.ERROR, redact(error)[:_ERROR_CHARS]))


# The run whose file the current spans go to: the outermost traced run (a nested team's run joins its parent's).
_run_id: ContextVar[str | None] = ContextVar("huddle_traced_run", default=None)


@contextmanager
def trace_run(log: RunLog, run_id: str, **values: Any) -> Iterator[Span]:
    """Trace everything in this context as run `run_id`, under one ``run`` span, into `log`; its end flushes it."""
    outer = _run_id.get()
    traced = tracing()
    token = _run_id.set(outer or run_id)
    try:
        with span(f"run {run_id}", "run", run_id=run_id, **values) as root:
            if outer is None and root.otel is not None:
                traced.run_log.register(run_id, log, root.otel.get_span_context().span_id)
            yield root
    finally:
        _run_id.reset(token)
        if outer is None:
            traced.run_log_processor.force_flush()


@contextmanager
def span(name: str, kind: str, **values: Any) -> Iterator[Span]:
    """A span under the current one; an exception marks it failed (and propagates). No-op outside a traced run."""
    otel = _start(name, kind, values)
    if otel is None:
        yield Span(kind)
        return
    current = Span(kind, otel)
    try:
        with trace.use_span(otel, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield current
    except BaseException as exc:
        current.fail(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        otel.end()


def event(name: str, kind: str, *, start: float | None = None, error: str | None = None, **values: Any) -> None:
    """A finished span recorded after the fact (a model call's, from its ledger row; a manager decision)."""
    otel = _start(name, kind, values, start=start)
    if otel is None:
        return
    if error:
        Span(kind, otel).fail(error)
    otel.end()


def _start(name: str, kind: str, values: dict[str, Any], start: float | None = None) -> trace.Span | None:
    run_id = _run_id.get()
    if run_id is None or effects.replaying():  # a replayed workflow's spans were exported the first time
        return None
    named = _clean(kind, values) | {KIND: kind, RUN_ID: run_id}
    if kind in OPERATIONS:
        named["gen_ai.operation.name"] = OPERATIONS[kind]
    return tracing().tracer.start_span(
        name,
        kind=SpanKind.CLIENT if kind == "model" else SpanKind.INTERNAL,
        attributes=named,
        start_time=int((start if start is not None else time.time()) * 1e9),
    )


def _clean(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """Named as the conventions say, masked, and of the types OpenTelemetry takes (others as JSON text)."""
    return {key: _value(value) for key, value in attributes(kind, values).items()}


def _value(value: Any) -> str | bool | int | float | list[str]:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return [redact(v) for v in value]
    return redact(json.dumps(value, default=str))
