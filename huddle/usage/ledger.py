"""The usage ledger: one row per model call, queried per run, agent, model, profile and session.

Rows are written by the metering client (`huddle.models.metering`) that wraps every client the framework builds, so
agents' calls, the manager's selection calls and summaries all land here. Token counts are the server's ``usage``
when it reported one (``token_source="server"``) and a tokenizer estimate otherwise (``"estimate"``); cached replies
cost nothing (``"cache"``). Prompt tokens the provider read from its prompt cache (``cached_tokens``, part of
``prompt_tokens``) are priced at its cached rate, and ``saved_usd`` is what that saved; ``reasoning_tokens`` are part
of ``completion_tokens``; ``price_source`` says where the price came from (`huddle.models.pricing`). The ledger is
SQLite (`huddle.storage.sqlite`): in memory by default, or a file that survives the process; or PostgreSQL
(`huddle.storage.postgres`, a ``postgresql://`` URL) shared by the processes of many hosts.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from pydantic import BaseModel, Field

from huddle.storage import is_url, open_database
from huddle.storage.sqlite import Migration

TokenSource = Literal["server", "estimate", "cache", "none"]
# A call is written before it is sent (``in_flight``) and settled when it returns (``done``): one in flight when its
# process died is ``interrupted`` the next time the ledger is opened, so no call that reached a server goes unseen.
CallState = Literal["in_flight", "done", "interrupted"]
INTERRUPTED = "Interrupted: the process making this call ended before the reply came"
GroupKey = Literal["run_id", "session_id", "agent", "profile", "model"]
# Where a call's price came from: the profile's ``price:``, the genai-prices table, free (the embedded model), or
# nowhere (``unknown``: cost 0, shown as such).
PriceSource = Literal["profile", "table", "free", "unknown"]


class UsageRecord(BaseModel):
    """One model call as the ledger keeps it."""

    id: int | None = None
    ts: float = Field(default_factory=time.time)
    run_id: str | None = None
    session_id: str | None = None
    agent: str
    profile: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    token_source: TokenSource = "server"
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    price_source: PriceSource | None = None
    """None: not priced (a failed call, or a row from before prices were sourced)."""
    latency_s: float = 0.0
    cached: bool = False
    streamed: bool = False
    error: str | None = None
    state: CallState = "done"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Totals(BaseModel):
    """Sums over a set of ledger rows."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    latency_s: float = 0.0
    cached_calls: int = 0
    errors: int = 0
    unpriced_calls: int = 0
    """Calls whose price is unknown (no ``price:`` and a model the table does not list): their cost is not in
    ``cost_usd``."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class UsageScope:
    """Which run and session the calls made inside `usage_scope` belong to."""

    run_id: str | None = None
    session_id: str | None = None
    call_key: str | None = None  # one call attempt's own key (a Temporal activity attempt): its row is written once


_scope: ContextVar[UsageScope] = ContextVar("huddle_usage_scope", default=UsageScope())  # noqa: B039


@contextmanager
def usage_scope(
    run_id: str | None = None, session_id: str | None = None, call_key: str | None = None
) -> Iterator[UsageScope]:
    """Attribute every metered call made in this context (and tasks started from it) to a run and session."""
    token = _scope.set(UsageScope(run_id=run_id, session_id=session_id, call_key=call_key))
    try:
        yield _scope.get()
    finally:
        _scope.reset(token)


def current_scope() -> UsageScope:
    return _scope.get()


_COLUMNS = tuple(name for name in UsageRecord.model_fields if name != "id")
# Schema steps, oldest first (see `huddle.storage.sqlite`). Step 1 is the schema from before versions existed, so
# a file from then passes it unharmed; a new column or table is a new step at the end, never an edit here.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL, run_id TEXT, session_id TEXT, agent TEXT NOT NULL, profile TEXT NOT NULL, model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, token_source TEXT NOT NULL,
    cost_usd REAL NOT NULL, latency_s REAL NOT NULL, cached INTEGER NOT NULL, streamed INTEGER NOT NULL, error TEXT
);
CREATE INDEX IF NOT EXISTS usage_run ON usage(run_id);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, run_id TEXT, session_id TEXT,
    turn INTEGER NOT NULL, speaker TEXT NOT NULL, policy TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_run ON decisions(run_id);
CREATE TABLE IF NOT EXISTS budget_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, run_id TEXT, session_id TEXT,
    agent TEXT NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_session ON usage(session_id);
"""
# Step 2: the call's state, and the process that wrote it in flight (to tell a live call from an interrupted one).
_CALL_STATE = """
ALTER TABLE usage ADD COLUMN state TEXT NOT NULL DEFAULT 'done';
ALTER TABLE usage ADD COLUMN pid INTEGER;
"""
# Step 3: cached and reasoning tokens from the server's usage details, what caching saved, where the price came from.
_PRICE_DETAILS = """
ALTER TABLE usage ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN saved_usd REAL NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN price_source TEXT;
"""
# Step 4: a caller's key for a call (a durable engine's activity attempt), written once however often it is
# delivered; and the host of an in-flight call's process, since a pid means nothing on another host's ledger.
_CALL_KEY = """
ALTER TABLE usage ADD COLUMN call_key TEXT;
ALTER TABLE usage ADD COLUMN host TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS usage_call_key ON usage(call_key);
"""
_MIGRATIONS: list[Migration] = [_SCHEMA, _CALL_STATE, _PRICE_DETAILS, _CALL_KEY]
_IN_CHUNK = 500  # ids per ``IN (...)``: far below SQLite's limit on bound parameters
_TOTALS_SQL = (
    "COUNT(*), COALESCE(SUM(prompt_tokens),0), COALESCE(SUM(completion_tokens),0), COALESCE(SUM(cached_tokens),0), "
    "COALESCE(SUM(reasoning_tokens),0), COALESCE(SUM(cost_usd),0), COALESCE(SUM(saved_usd),0), "
    "COALESCE(SUM(latency_s),0), COALESCE(SUM(cached),0), COUNT(error), "
    "COALESCE(SUM(CASE WHEN price_source = 'unknown' THEN 1 ELSE 0 END),0)"
)


class UsageLedger:
    """Thread-safe store of `UsageRecord` rows with totals per run, session, agent, profile or model."""

    def __init__(self, location: Path | str | None = None) -> None:
        """A ledger in `location`: a ``postgresql://`` URL, a file, or None for one in memory."""
        self.path = Path(location) if location is not None and not is_url(location) else None
        self._db = open_database(location, _MIGRATIONS, what="usage ledger")
        self._host = socket.gethostname()
        self._settle_the_dead()

    def record(self, record: UsageRecord, key: str | None = None) -> UsageRecord:
        """Append one call; returns it with its id. With a `key` already written, nothing is written and the row
        of that key is returned (a durable engine redelivering one attempt of a call)."""
        in_flight = record.state == "in_flight"
        values = [
            *(getattr(record, c) for c in _COLUMNS),
            os.getpid() if in_flight else None,
            self._host if in_flight else None,
            key,
        ]
        with self._db.connection() as db:  # no transaction: a key's row, once written, stays
            row = db.execute(
                f"INSERT INTO usage ({', '.join(_COLUMNS)}, pid, host, call_key) "
                f"VALUES ({', '.join('?' * len(values))}) ON CONFLICT DO NOTHING RETURNING id",
                values,
            ).fetchone()
            if row is None:  # only a key already written conflicts
                row = db.execute("SELECT id FROM usage WHERE call_key = ?", (key,)).fetchone()
        return record.model_copy(update={"id": int(row[0])})

    def begin(self, record: UsageRecord, key: str | None = None) -> int:
        """Write a call about to be sent, in flight, and return its row for `settle`; a `key` written before
        returns that row and writes nothing (see `record`).

        Written before the call, not after: 20 of 97 calls in flight when a process was killed never reached the
        ledger although the server had them.
        """
        written = self.record(record.model_copy(update={"state": "in_flight"}), key)
        return cast(int, written.id)  # a written row's id is set

    def settle(self, row: int, record: UsageRecord) -> UsageRecord:
        """Replace the in-flight row `row` with how the call ended; returns `record` with that id."""
        done = record.model_copy(update={"id": row, "state": "done"})
        with self._db.connection() as db:
            db.execute(
                f"UPDATE usage SET {', '.join(f'{c} = ?' for c in _COLUMNS)}, pid = NULL, host = NULL WHERE id = ?",
                [*(getattr(done, c) for c in _COLUMNS), row],
            )
        return done

    def _settle_the_dead(self) -> None:
        """Mark calls left in flight by processes of this host that no longer run as interrupted (their error says
        so). A call in flight on another host is left to that host (its pid means nothing here); a row without a
        host is from before hosts were kept, when the ledger was one host's file."""
        mine = "state = 'in_flight' AND (host = ? OR host IS NULL)"
        settle = (
            f"UPDATE usage SET state = 'interrupted', pid = NULL, host = NULL, error = COALESCE(error, ?) WHERE {mine}"
        )
        with self._db.connection() as db:
            pids = [pid for (pid,) in db.execute(f"SELECT DISTINCT pid FROM usage WHERE {mine}", (self._host,))]
            dead = [pid for pid in pids if not _alive(pid)]
            if None in dead:
                db.execute(f"{settle} AND pid IS NULL", (INTERRUPTED, self._host))
            db.executemany(f"{settle} AND pid = ?", [(INTERRUPTED, self._host, pid) for pid in dead if pid is not None])

    def records(self, **filters: str | None) -> list[UsageRecord]:
        """Rows in call order, filtered by any of run_id, session_id, agent, profile, model."""
        where, params = _where(filters)
        with self._db.connection() as db:
            rows = db.execute(f"SELECT id, {', '.join(_COLUMNS)} FROM usage{where} ORDER BY id", params).fetchall()
        with self._db.parsing("the usage rows"):
            return [UsageRecord(**dict(zip(("id", *_COLUMNS), row, strict=True))) for row in rows]

    def totals(self, **filters: str | None) -> Totals:
        """Sums over the rows matching `filters`."""
        where, params = _where(filters)
        with self._db.connection() as db:
            row = db.execute(f"SELECT {_TOTALS_SQL} FROM usage{where}", params).fetchone()
        with self._db.parsing("the usage rows"):
            return _totals(row)

    def cost_since(self, since: float, session_ids: Sequence[str]) -> float:
        """Dollars the calls of `session_ids` cost from `since` (a Unix time) on: what an API key of ``huddle serve``
        spent today over its sessions (`huddle.serve.keys`), one query per 500 sessions rather than one each."""
        total = 0.0
        ids = list(session_ids)
        with self._db.connection() as db:
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                (cost,) = db.execute(
                    f"SELECT COALESCE(SUM(cost_usd),0) FROM usage WHERE ts >= ? AND session_id IN "
                    f"({', '.join('?' * len(chunk))})",
                    [since, *chunk],
                ).fetchone()
                total += float(cost)
        return total

    def by(self, key: GroupKey, **filters: str | None) -> dict[str, Totals]:
        """Totals grouped by `key` (e.g. per agent within one run)."""
        if key not in GroupKey.__args__:  # type: ignore[attr-defined]
            raise ValueError(f"cannot group usage by {key!r}")
        where, params = _where(filters)
        with self._db.connection() as db:
            rows = db.execute(
                f"SELECT COALESCE({key}, '-'), {_TOTALS_SQL} FROM usage{where} GROUP BY 1 ORDER BY 1", params
            ).fetchall()
        with self._db.parsing("the usage rows"):
            return {row[0]: _totals(row[1:]) for row in rows}

    def record_decision(self, turn: int, speaker: str, policy: str, reason: str) -> None:
        """Keep a manager's speaker decision beside the calls of the same run (see `huddle.teams.manager`)."""
        scope = current_scope()
        with self._db.connection() as db:
            db.execute(
                "INSERT INTO decisions (ts, run_id, session_id, turn, speaker, policy, reason) VALUES (?,?,?,?,?,?,?)",
                (time.time(), scope.run_id, scope.session_id, turn, speaker, policy, reason),
            )

    def record_budget_decision(self, agent: str, action: str, reason: str) -> None:
        """Keep a budget governor's decision (trim, downgrade, skip, stop) beside the calls of the same run."""
        scope = current_scope()
        with self._db.connection() as db:
            db.execute(
                "INSERT INTO budget_decisions (ts, run_id, session_id, agent, action, reason) VALUES (?,?,?,?,?,?)",
                (time.time(), scope.run_id, scope.session_id, agent, action, reason),
            )

    def budget_decisions(self, run_id: str) -> list[dict[str, str]]:
        """A run's budget decisions in order: agent, action, reason."""
        with self._db.connection() as db:
            rows = db.execute(
                "SELECT agent, action, reason FROM budget_decisions WHERE run_id = ? ORDER BY id", (run_id,)
            ).fetchall()
        return [dict(zip(("agent", "action", "reason"), row, strict=True)) for row in rows]

    def decisions(self, run_id: str) -> list[dict[str, str | int]]:
        """A run's speaker decisions in order: turn, speaker, policy, reason."""
        with self._db.connection() as db:
            rows = db.execute(
                "SELECT turn, speaker, policy, reason FROM decisions WHERE run_id = ? ORDER BY id", (run_id,)
            ).fetchall()
        return [dict(zip(("turn", "speaker", "policy", "reason"), row, strict=True)) for row in rows]

    def close(self) -> None:
        self._db.close()


def _alive(pid: int | None) -> bool:
    """Whether process `pid` still runs (one we may not signal does); a row without one has no process to wait on."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _where(filters: dict[str, str | None]) -> tuple[str, list[str]]:
    unknown = set(filters) - set(GroupKey.__args__)  # type: ignore[attr-defined]
    if unknown:
        raise ValueError(f"unknown usage filter(s): {', '.join(sorted(unknown))}")
    used = {k: v for k, v in filters.items() if v is not None}
    if not used:
        return "", []
    return " WHERE " + " AND ".join(f"{k} = ?" for k in used), list(used.values())


def _totals(row: tuple[int | float, ...]) -> Totals:
    calls, prompt, completion, cached_tokens, reasoning, cost, saved, latency, cached, errors, unpriced = row
    return Totals(
        calls=int(calls),
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        cached_tokens=int(cached_tokens),
        reasoning_tokens=int(reasoning),
        cost_usd=float(cost),
        saved_usd=float(saved),
        latency_s=float(latency),
        cached_calls=int(cached),
        errors=int(errors),
        unpriced_calls=int(unpriced),
    )
