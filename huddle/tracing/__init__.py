"""Tracing: one span per run, turn, model and tool call, written to a run's JSONL log and, when configured, to
OpenTelemetry. The span API is re-exported here (`from huddle import tracing; tracing.span(...)`)."""

from huddle.tracing.spans import OTLP_ENDPOINT_ENV, RunLog, Span, event, read_run, span, trace_run

__all__ = ["OTLP_ENDPOINT_ENV", "RunLog", "Span", "event", "read_run", "span", "trace_run"]
