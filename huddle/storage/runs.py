"""Runs' traces in the shared database (``database_url``): the run log of every host in one place.

With a PostgreSQL ``database_url`` each span is a row (the JSON line a run folder's file would hold, with its run and
when it was written), so ``huddle runs`` and ``huddle trace`` on any host show the runs of every host: a Temporal
session's turns, whichever worker ran them, or the workers of several ``huddle serve`` machines. It is a
`huddle.tracing.runlog.RunLog`; without a database URL the run folder is.

A database that cannot take a batch is one warning per process and the run goes on: a trace is a view, the ledger
and the session store are what must be written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from functools import cache

from huddle.errors import HuddleError
from huddle.storage import open_database
from huddle.storage.sqlite import Migration

logger = logging.getLogger("huddle.tracing")

_MIGRATIONS: list[Migration] = [
    """
    CREATE TABLE IF NOT EXISTS run_spans (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        written REAL NOT NULL,
        line TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS run_spans_run ON run_spans (run_id, id);
    CREATE INDEX IF NOT EXISTS run_spans_written ON run_spans (written);
    """
]


class RunStore:
    """Spans as rows of ``run_spans`` in the database at `url`; safe to share between threads (the exporter's)."""

    def __init__(self, url: str) -> None:
        self._db = open_database(url, _MIGRATIONS, what="run log")
        self._warned = threading.Event()

    def append(self, run_id: str, lines: Sequence[str]) -> None:
        now = time.time()
        try:
            with self._db.transaction() as db:
                for line in lines:
                    db.execute("INSERT INTO run_spans (run_id, written, line) VALUES (?, ?, ?)", (run_id, now, line))
        except HuddleError as exc:
            if not self._warned.is_set():
                self._warned.set()
                logger.warning(
                    "warning: run traces cannot be written to the database (%s); runs go on without them", exc
                )

    def lines(self, run_id: str) -> list[str]:
        with self._db.connection() as db:
            rows = db.execute("SELECT line FROM run_spans WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()
        return [str(row[0]) for row in rows]

    def recent(self, limit: int) -> list[str]:
        with self._db.connection() as db:
            rows = db.execute(
                "SELECT run_id FROM run_spans GROUP BY run_id ORDER BY MAX(written) DESC LIMIT ?", (limit,)
            ).fetchall()
        return [str(row[0]) for row in rows]


@cache
def shared_run_store(url: str) -> RunStore:
    """One store per database and process: every run of the process writes through the same connection."""
    return RunStore(url)
