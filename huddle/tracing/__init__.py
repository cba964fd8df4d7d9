"""Tracing: one OpenTelemetry span per run, turn, model and tool call, named on the GenAI semantic conventions,
written to a run's JSONL log and, when the ``OTEL_*`` variables ask for it, exported over OTLP. The span API is
re-exported here (`from huddle import tracing; tracing.span(...)`)."""

from huddle.tracing.conventions import span_name
from huddle.tracing.runlog import read_run
from huddle.tracing.spans import Span, event, span, trace_run

__all__ = ["Span", "event", "read_run", "span", "span_name", "trace_run"]
