"""Persistence: the one SQLite helper (`sqlite`: connection, WAL, lock, schema migrations), its PostgreSQL
counterpart (`postgres`, for a ledger and sessions shared by many hosts), and durable chat sessions (`sessions`).

`location` and `open_database` pick the backend: a ``postgresql://`` URL (``Settings.database_url``) or a file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from huddle.storage.sqlite import Database, Migration

if TYPE_CHECKING:
    from huddle.storage.postgres import PostgresDatabase

_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: Path | str | None) -> bool:
    """Whether `location` names a PostgreSQL database rather than a file."""
    return isinstance(location, str) and location.startswith(_SCHEMES)


def location(url: str | None, path: Path) -> Path | str:
    """Where a store lives: the PostgreSQL `url` when one is configured, else its file `path` (the default)."""
    return url if url else path


def open_database(
    where: Path | str | None, migrations: Sequence[Migration], *, what: str
) -> Database | PostgresDatabase:
    """The store's database at `where` (a ``postgresql://`` URL, a file, or None for memory), schema up to date."""
    if is_url(where):
        from huddle.storage.postgres import PostgresDatabase  # psycopg is an extra: imported only when used

        return PostgresDatabase(str(where), migrations, what=what)
    return Database(Path(where) if where is not None else None, migrations, what=what)
