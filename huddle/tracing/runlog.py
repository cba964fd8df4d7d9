"""The run log: an OpenTelemetry span exporter writing each run's spans to its `RunLog`.

A `RunLog` keeps a run's spans as JSON lines (id, parent, run_id, name, kind, start, end, attributes, status,
error), which ``huddle trace`` prints as a tree and ``huddle runs`` lists: `RunFolder`, one file per run under
``DATA_DIR/runs``, by default; the shared database's (`huddle.storage.runs`) with ``database_url``, so that the runs
of every host (a Temporal session's turns, whichever worker ran them) are read in one place. The exporter sits
behind a batch processor like any exporter; the run's end flushes it, so a finished run's log is complete when its
result is returned. A process killed mid-run loses the spans not yet flushed (at most one batch delay's worth): the
usage ledger and the session store, not the trace, are what survives a crash.

Spans are routed by their ``huddle.run_id`` attribute to the log their run registered; a span of a run nobody
registered (a straggler after its run was forgotten) is dropped rather than written to a guessed place.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from huddle.tracing.conventions import KIND, RUN_ID

logger = logging.getLogger("huddle.tracing")

# How many runs' folders are remembered for late spans; a long-lived server forgets the oldest.
_REMEMBERED_RUNS = 1024


class RunLog(Protocol):
    """Where runs' spans are kept, one JSON line each (`RunFolder`, or `huddle.storage.runs.RunStore`)."""

    def append(self, run_id: str, lines: Sequence[str]) -> None:
        """Add spans to the run's log; a log that cannot be written warns once and the run goes on."""

    def lines(self, run_id: str) -> list[str]:
        """The run's lines, in the order they were written."""

    def recent(self, limit: int) -> list[str]:
        """The ids of the runs written to last, newest first."""


class RunFolder:
    """One JSONL file per run in `directory`; a folder that cannot be written is one warning, not a failed run."""

    _warned: ClassVar[set[Path]] = set()  # one line per folder and process, not one per batch

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def append(self, run_id: str, lines: Sequence[str]) -> None:
        directory = self.directory
        try:
            if not directory.is_dir():
                directory.mkdir(parents=True, exist_ok=True)
            with (directory / f"{run_id}.jsonl").open("a", encoding="utf-8") as out:
                out.write("\n".join(lines) + "\n")
        except OSError as exc:
            if directory not in self._warned:
                self._warned.add(directory)
                logger.warning(
                    "warning: run traces cannot be written to %s (%s); runs go on without them — make the folder "
                    "writable or set HUDDLE_HOME to a writable data dir",
                    directory,
                    exc.strerror or type(exc).__name__,
                )

    def lines(self, run_id: str) -> list[str]:
        path = self.directory / f"{run_id}.jsonl"
        return path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []

    def recent(self, limit: int) -> list[str]:
        if not self.directory.is_dir():
            return []
        files = sorted(self.directory.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)
        return [path.stem for path in files[:limit]]


@dataclass(frozen=True)
class _Destination:
    log: RunLog
    root_span_id: int  # the run's own span: written with no parent, whatever the caller's context had around it


class RunLogExporter(SpanExporter):
    """Appends spans to their run's log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, _Destination] = OrderedDict()

    def register(self, run_id: str, log: RunLog, root_span_id: int) -> None:
        with self._lock:
            self._runs[run_id] = _Destination(log, root_span_id)
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
                self._runs[run_id].log.append(run_id, batch)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release: the logs belong to whoever registered them."""


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


def read_run(log: RunLog | Path, run_id: str) -> list[dict[str, Any]]:
    """The spans of one run (in a run folder when `log` is a path), in the order they were written; a damaged line
    (a write cut short) is skipped."""
    spans = []
    for line in (RunFolder(log) if isinstance(log, Path) else log).lines(run_id):
        try:
            spans.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return spans
