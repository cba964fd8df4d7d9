"""The one SQLite helper under huddle's stores (the usage ledger, the session store): connection, WAL, lock, schema.

A store declares its schema as a list of migration steps, oldest first. ``PRAGMA user_version`` records how many
steps a file has had, so opening a file from an older huddle runs the steps it lacks (each in its own transaction,
with the version bump), and a file from a newer huddle, with more steps than this code knows, is refused with one
error instead of being misread or written in an old shape. The first step of a store is written so that a file from
before versions existed (user_version 0, tables already there) passes it unharmed.

Files use WAL (a reader never blocks the writer, and a killed process loses at most the transaction it was in) and
``synchronous=NORMAL``: with WAL that keeps every commit safe from a crashed or killed process and skips the fsync
that FULL does per commit (about 0.2 ms each, on the event loop, for every metered call). The connection is shared
by a process's threads behind one lock and runs in autocommit mode; `transaction` makes a write one unit.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from huddle.errors import HuddleError

Migration = str | Callable[[sqlite3.Connection], None]
"""One schema step: SQL statements, or a function for a step that must look before it changes (e.g. add a column
that a file may already have)."""


class SchemaTooNewError(HuddleError):
    """The file was written by a newer huddle (its schema has steps this code does not know); it is left untouched."""


class Database:
    """One SQLite file (or an in-memory database) with its schema brought up to date, shared between threads."""

    def __init__(self, path: Path | None, migrations: Sequence[Migration], *, what: str) -> None:
        """Open `path` (None: in memory) and run the `migrations` it lacks; `what` names the store in errors."""
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        try:
            with self._lock:
                self._db.execute("PRAGMA foreign_keys=ON")
                # Before WAL, so a file refused as too new is not even switched to WAL.
                self._migrate(migrations, what)
                if path is not None:
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            self._db.close()
            raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside ``BEGIN IMMEDIATE``: committed if the block ends, rolled back if it raises.

        IMMEDIATE takes the write lock up front, so a read-then-write (the next turn number) cannot interleave with
        another process's.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """The connection while no other thread uses it: for reads, and writes of one statement (each is committed
        on its own)."""
        with self._lock:
            yield self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self, migrations: Sequence[Migration], what: str) -> None:
        """Run the steps the file lacks, one transaction each; the version is re-read under the write lock, so two
        processes opening one old file do not both run a step."""
        known = len(migrations)
        while True:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (version,) = self._db.execute("PRAGMA user_version").fetchone()
                if version > known:
                    where = f" {self.path}" if self.path is not None else ""
                    raise SchemaTooNewError(
                        f"the {what}{where} has schema version {version}, but this huddle knows only up to {known}: "
                        "it was written by a newer huddle; upgrade huddle-agents, or move the file aside"
                    )
                if version < known:
                    step = migrations[version]
                    if isinstance(step, str):
                        for statement in _statements(step):
                            self._db.execute(statement)
                    else:
                        step(self._db)
                    self._db.execute(f"PRAGMA user_version = {version + 1}")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            if version >= known:
                return


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script one by one (``execute`` takes one; ``executescript`` would commit midway)."""
    buffer = ""
    for char in script:
        buffer += char
        if char == ";" and sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""
    if buffer.strip():
        yield buffer
