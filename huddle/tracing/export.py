"""huddle's OpenTelemetry tracer provider: the run log always, OTLP when the standard ``OTEL_*`` variables ask for it.

Both exporters sit behind a `BatchSpanProcessor`, so no span is exported on the thread that made it: a slow or dead
receiver never slows a run. What the variables mean here (the OpenTelemetry SDK's own names and defaults):

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: where to send; unset, nothing is sent
  (``OTEL_TRACES_EXPORTER=otlp`` sends to the SDK's default endpoint, ``none`` turns OTLP off).
- ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``grpc`` (the Python SDK's default) or
  ``http/protobuf``.
- ``OTEL_EXPORTER_OTLP_HEADERS``, ``..._TIMEOUT``, ``..._INSECURE``, ``..._CERTIFICATE``, ``..._COMPRESSION``,
  ``OTEL_BSP_*``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``: read by the SDK itself.
- ``OTEL_SDK_DISABLED=true``: no tracing at all, as the specification says of every SDK: spans are no-ops and the
  run log stays empty too (``huddle trace`` says why). To keep the run log and send nothing, set
  ``OTEL_TRACES_EXPORTER=none`` instead.

A receiver that cannot be reached is one warning line for the process (the SDK would log every failed batch and
retry), and at exit the last batch gets `EXIT_FLUSH_S`, not the SDK's 30 s. huddle uses a provider of its own rather
than the global one, so an application's own tracing setup is neither replaced nor needed; huddle's spans still nest
under the application's current span, since context is shared.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Tracer

from huddle.tracing.runlog import RunLogExporter

logger = logging.getLogger("huddle.tracing")

EXIT_FLUSH_S = 0.5  # at exit, the last OTLP batch gets this long; a live receiver on a LAN answers in milliseconds
RUN_LOG_DELAY_MS = 200  # the run log's batch delay: files fill while a run goes on, and its end flushes the rest
PROTOCOLS = ("grpc", "http/protobuf")
# The SDK's exporter loggers: each failed batch logs a warning and an error; `_WarnOnce` says it once instead.
_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.sdk._shared_internal",
)


@dataclass
class Tracing:
    """What one process traces with: a tracer on huddle's provider, and the run log's exporter and processor."""

    tracer: Tracer
    run_log: RunLogExporter
    run_log_processor: BatchSpanProcessor
    otlp: str | None  # "grpc -> endpoint" when exporting, for messages


_lock = threading.Lock()
_current: Tracing | None = None


def tracing() -> Tracing:
    """The process's tracing, set up on first use (the environment is read then: set ``OTEL_*`` before)."""
    global _current
    with _lock:
        if _current is None:
            _current = _set_up()
        return _current


def _set_up() -> Tracing:
    provider = TracerProvider(resource=Resource.create({"service.name": "huddle"}), shutdown_on_exit=False)
    run_log = RunLogExporter()
    run_log_processor = BatchSpanProcessor(run_log, schedule_delay_millis=RUN_LOG_DELAY_MS)
    provider.add_span_processor(run_log_processor)
    otlp = _otlp_exporter()
    described = None
    if otlp is not None:
        exporter, described = otlp
        processor = BatchSpanProcessor(_WarnOnce(exporter, described))
        provider.add_span_processor(processor)
        atexit.register(_shut_down_within, processor, EXIT_FLUSH_S)
    atexit.register(run_log_processor.shutdown)
    return Tracing(provider.get_tracer("huddle"), run_log, run_log_processor, described)


def _shut_down_within(processor: BatchSpanProcessor, seconds: float) -> None:
    """Flush and stop `processor`, waiting at most `seconds` (its own shutdown takes no timeout and waits up to
    30 s on a receiver that does not answer); a thread still exporting after that is a daemon and ends with us."""
    stopping = threading.Thread(target=processor.shutdown, name="huddle trace export shutdown", daemon=True)
    stopping.start()
    stopping.join(seconds)


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _otlp_exporter() -> tuple[SpanExporter, str] | None:
    """The OTLP exporter the environment asks for, or None (not asked, disabled, or not installed: one warning)."""
    if _env("OTEL_SDK_DISABLED").lower() == "true":
        return None
    chosen = {e.strip().lower() for e in _env("OTEL_TRACES_EXPORTER").split(",") if e.strip()}
    endpoint = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_ENDPOINT")
    if "none" in chosen or ("otlp" not in chosen and not endpoint):
        return None
    protocol = (_env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").lower()
    if protocol not in PROTOCOLS:
        logger.warning(
            "warning: traces are not exported: OTEL_EXPORTER_OTLP_PROTOCOL is %r; expected one of %s",
            protocol,
            ", ".join(PROTOCOLS),
        )
        return None
    for name in _SDK_LOGGERS:
        logging.getLogger(name).addFilter(_drop)
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

            exporter: SpanExporter = Grpc()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

            exporter = Http()
    except ImportError:
        logger.warning(
            "warning: traces are not exported: OTLP over %s needs the otel extra: pip install 'huddle-agents[otel]'",
            protocol,
        )
        return None
    return exporter, f"{protocol} -> {endpoint or 'the default endpoint'}"


def _drop(record: logging.LogRecord) -> bool:
    """The SDK's own export logs are replaced by `_WarnOnce`'s one line."""
    return False


class _WarnOnce(SpanExporter):
    """The OTLP exporter, saying once per process that its receiver cannot be reached."""

    def __init__(self, inner: SpanExporter, described: str) -> None:
        self.inner, self.described = inner, described
        self._warned = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # an exporter bug must not end the batch thread
            result, reason = SpanExportResult.FAILURE, f"{type(exc).__name__}: {exc}"
        else:
            reason = "the receiver did not accept them"
        if result is SpanExportResult.FAILURE and not self._warned:
            self._warned = True
            logger.warning(
                "warning: traces could not be exported (OTLP %s: %s); the run log still has them (huddle trace)",
                self.described,
                reason,
            )
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)
