"""The run log: an OpenTelemetry span exporter writing each run's spans to ``DATA_DIR/runs/<run_id>.jsonl``.

One line per finished span (id, parent, run_id, name, kind, start, end, attributes, status, error), which ``huddle
trace`` prints as a tree and ``huddle runs`` lists. It sits behind a batch processor like any exporter; the run's end
flushes it, so a finished run's file is complete when its result is returned. A process killed mid-run loses the
spans not yet flushed (at most one batch delay's worth): the usage ledger and the session store, not the trace, are
what survives a crash.

Spans are routed by their ``huddle.run_id`` attribute to the folder their run registered; a span of a run nobody
registered (a straggler after its run's folder was forgotten) is dropped rather than written to a guessed place.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from huddle.tracing.conventions import KIND, RUN_ID

logger = logging.getLogger("huddle.tracing")

# How many runs' folders are remembered for late spans; a long-lived server forgets the oldest.
_REMEMBERED_RUNS = 1024


@dataclass(frozen=True)
class _Destination:
    directory: Path
    root_span_id: int  # the run's own span: written with no parent, whatever the caller's context had around it


class RunLogExporter(SpanExporter):
    """Appends spans to their run's JSONL file; a folder that cannot be written is one warning, and the run goes on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, _Destination] = OrderedDict()
        self._warned: set[Path] = set()

    def register(self, run_id: str, directory: Path, root_span_id: int) -> None:
        with self._lock:
            self._runs[run_id] = _Destination(directory, root_span_id)
            while len(self._runs) > _REMEMBERED_RUNS:
                self._runs.popitem(last=False)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines: dict[str, list[str]] = {}
        with self._lock:
            for span in spans:
                run_id = str((span.attributes or {}).get(RUN_ID, ""))
                destination = self._runs.get(run_id)
                if destination is not None:
                    lines.setdefault(run_id, []).append(json.dumps(_record(span, run_id, destination)))
            for run_id, batch in lines.items():
                self._append(self._runs[run_id].directory, run_id, batch)
        return SpanExportResult.SUCCESS

    def _append(self, directory: Path, run_id: str, batch: list[str]) -> None:
        try:
            if not directory.is_dir():
                directory.mkdir(parents=True, exist_ok=True)
            with (directory / f"{run_id}.jsonl").open("a", encoding="utf-8") as out:
                out.write("\n".join(batch) + "\n")
        except OSError as exc:
            if directory not in self._warned:  # one line per folder, not one per batch
                self._warned.add(directory)
                logger.warning(
                    "warning: run traces cannot be written to %s (%s); runs go on without them — make the folder "
                    "writable or set HUDDLE_HOME to a writable data dir",
                    directory,
                    exc.strerror or type(exc).__name__,
                )

    def shutdown(self) -> None:
        """Nothing to release: each batch opens and closes its files."""


def _record(span: ReadableSpan, run_id: str, destination: _Destination) -> dict[str, Any]:
    attributes = dict(span.attributes or {})
    kind = str(attributes.pop(KIND, "span"))
    attributes.pop(RUN_ID, None)
    context = span.get_span_context()
    own_id = context.span_id if context is not None else 0
    parent = None if span.parent is None or own_id == destination.root_span_id else f"{span.parent.span_id:016x}"
    failed = span.status.status_code is StatusCode.ERROR
    return {
        "id": f"{own_id:016x}",
        "parent": parent,
        "run_id": run_id,
        "name": span.name,
        "kind": kind,
        "start": (span.start_time or 0) / 1e9,
        "end": (span.end_time or 0) / 1e9,
        "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in attributes.items()},
        "status": "error" if failed else "ok",
        "error": span.status.description if failed else None,
    }


def read_run(directory: Path, run_id: str) -> list[dict[str, Any]]:
    """The spans of one run, in the order they were written (a damaged line is skipped)."""
    path = directory / f"{run_id}.jsonl"
    if not path.is_file():
        return []
    spans = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            spans.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return spans
