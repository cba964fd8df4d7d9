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

SQLite's own failures (a damaged or foreign file, a read-only or full disk, a lock held too long) are the user's
environment, not a bug: each becomes one `StorageError` naming the file and what to do. An empty (0-byte) file is an
empty database to SQLite and is used as a new one: nothing was in it to lose (a touched or pre-created file).
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

from huddle.errors import HuddleError

BUSY_TIMEOUT_S = 30.0
"""How long a write waits for another process's transaction (Python's default, 5 s, is short for ten processes
sharing one ledger on a slow disk); past it the user gets one "held it locked too long" line."""


class Connection(Protocol):
    """What a store's SQL runs on, whichever the backend: ``sqlite3.Connection``, or the PostgreSQL adapter
    (`huddle.storage.postgres`) that takes the same portable SQL (``?`` placeholders, ``RETURNING id``)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...


Migration = str | Callable[[Connection], None]
"""One schema step: SQL statements, or a function for a step that must look before it changes (e.g. add a column
that a file may already have). Written once for both backends: `columns` tells what a table has on either."""


def columns(db: Connection, table: str) -> set[str]:
    """The column names of `table` (``PRAGMA table_info`` on SQLite, ``information_schema`` on PostgreSQL)."""
    if isinstance(db, sqlite3.Connection):
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    return {
        row[0]
        for row in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ?",
            (table,),
        ).fetchall()
    }


class SchemaTooNewError(HuddleError):
    """The file was written by a newer huddle (its schema has steps this code does not know); it is left untouched."""


class StorageError(HuddleError):
    """A store's file cannot be opened, read or written; the message names the file and what to do."""


# What to do, by SQLite's primary result code (``sqlite_errorname`` without its extended suffix).
_ADVICE = {
    "SQLITE_CORRUPT": "it is damaged; move it aside (huddle then starts an empty one) or restore it from a backup",
    "SQLITE_NOTADB": "it is not a SQLite database; move it aside (huddle then starts an empty one)",
    "SQLITE_READONLY": "it or its folder is read-only; make {folder} writable, or choose another --data-dir",
    "SQLITE_CANTOPEN": "it cannot be opened; check that {folder} exists and is writable, or choose another --data-dir",
    "SQLITE_PERM": "permission denied; make {folder} writable, or choose another --data-dir",
    "SQLITE_FULL": "the disk is full; free some space and try again",
    "SQLITE_IOERR": "the disk failed to read or write it; check the disk, or choose another --data-dir",
    "SQLITE_BUSY": "another huddle process held it locked too long; try again when that one is done",
    "SQLITE_LOCKED": "another huddle process held it locked too long; try again when that one is done",
}


def _storage_error(problem: str, code: str | None, path: Path | None, what: str) -> StorageError:
    """One line for a store that cannot be used: the store, its file, what went wrong and the advice for SQLite's
    result `code` (``SQLITE_CORRUPT`` for damage found by us rather than by SQLite)."""
    advice = _ADVICE.get("_".join((code or "").split("_")[:2]), "if the file is not huddle's, move it aside")
    folder = path.parent if path is not None else "the data directory"
    where = f" {path}" if path is not None else " (in memory)"
    return StorageError(f"the {what}{where} cannot be used ({problem}): {advice.format(folder=folder)}")


def _environmental(exc: BaseException) -> bool:
    """SQLite failing on its file or disk (wrapped for the user), as opposed to a bug in our SQL (a constraint, a
    closed connection), which should stay a traceback."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


class Rows(ABC):
    """What both backends share for rows that the database reads but that do not hold what the store wrote."""

    @abstractmethod
    def damaged(self, problem: str) -> StorageError:
        """The error naming the store for rows that do not hold what it wrote."""

    @contextmanager
    def parsing(self, what: str) -> Iterator[None]:
        """Around turning rows into objects: rows that the database reads but that do not hold what the store wrote
        (bytes damaged inside a JSON cell, a status that is no status) make the store a damaged one, like SQLite's
        own corruption errors."""
        try:
            yield
        except (ValueError, TypeError):  # json's and pydantic's errors are ValueErrors
            raise self.damaged(f"{what} do not parse") from None


class Database(Rows):
    """One SQLite file (or an in-memory database) with its schema brought up to date, shared between threads."""

    def __init__(self, path: Path | None, migrations: Sequence[Migration], *, what: str) -> None:
        """Open `path` (None: in memory) and run the `migrations` it lacks; `what` names the store in errors."""
        self.path = path
        self._what = what
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                reason = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
                raise StorageError(
                    f"the {what} {path} cannot be created: no folder {path.parent} ({reason}); "
                    "choose another --data-dir"
                ) from None
        with self._errors():
            self._db = sqlite3.connect(
                str(path) if path else ":memory:", timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
            )
        self._lock = threading.Lock()
        try:
            with self._lock, self._errors():
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
    def _errors(self) -> Iterator[None]:
        """SQLite's failures on the file or disk as one `StorageError` (see the module docstring)."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if not _environmental(exc):
                raise
            code = getattr(exc, "sqlite_errorname", None)
            if code is None:  # raised by Python's sqlite3, not SQLite: a text cell's bytes are not UTF-8
                raise self.damaged("a stored text is not UTF-8") from None
            raise _storage_error(str(exc), code, self.path, self._what) from None
        except UnicodeDecodeError:  # the same damage, met by a converter instead
            raise self.damaged("a stored text is not UTF-8") from None

    def damaged(self, problem: str) -> StorageError:
        """The error for a file whose rows do not hold what its store wrote (the store found it, not SQLite)."""
        return _storage_error(problem, "SQLITE_CORRUPT", self.path, self._what)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside ``BEGIN IMMEDIATE``: committed if the block ends, rolled back if it raises.

        IMMEDIATE takes the write lock up front, so a read-then-write (the next turn number) cannot interleave with
        another process's.
        """
        with self._lock, self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._rollback()
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """The connection while no other thread uses it: for reads, and writes of one statement (each is committed
        on its own)."""
        with self._lock, self._errors():
            yield self._db

    def _rollback(self) -> None:
        """Undo the open transaction, if SQLite has not already (it rolls back by itself on a full disk or an I/O
        error): a failing ROLLBACK must not replace the error that caused it."""
        if self._db.in_transaction:
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

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
                        for statement in statements(step):
                            self._db.execute(statement)
                    else:
                        step(self._db)
                    self._db.execute(f"PRAGMA user_version = {version + 1}")
            except BaseException:
                self._rollback()
                raise
            self._db.execute("COMMIT")
            if version >= known:
                return


def statements(script: str) -> Iterator[str]:
    """The statements of an SQL script one by one (``execute`` takes one; ``executescript`` would commit midway)."""
    buffer = ""
    for char in script:
        buffer += char
        if char == ";" and sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""
    if buffer.strip():
        yield buffer
