"""API keys for ``huddle serve``: who may call a server off loopback, which sessions are whose, and what each key may
spend.

A key is ``hud_<id>_<secret>``: the id (12 hex digits) names it in listings, in the access log and as the owner of
its sessions; the secret is 32 random bytes. Only the secret's SHA-256 is stored (``keys.sqlite`` under the data
directory), so a copied file gives no working key. Not bcrypt or scrypt: those are slow on purpose to protect
low-entropy passwords from guessing, and a 256-bit random secret cannot be guessed however fast its hash is, while
the server checks the key on every request, where a deliberate 100 ms would be 100 ms per request.

A session belongs to the key that made it: another key asking for it gets `SessionNotFound`, the same 404 as a
session that does not exist, so a key cannot even learn that another's session is there. A session made while the
server ran without keys belongs to no key, and no key may take it over.

Per-key budgets are dollars per UTC day (over all the key's sessions) and per session. Before a turn, a key with
nothing left is refused (`KeyBudgetSpent`, HTTP 429, OpenAI's ``insufficient_quota``); otherwise what is left is
folded into the turn's budget (the run's ``max_usd`` is at most what is left of the day, the session's at most the
key's per-session limit), so the governor refuses the call that would go past it inside the run.

`required` decides, when a server starts, whether keys are required: always when any key exists, and a server
listening beyond loopback with no key refuses to start.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import ipaddress
import math
import secrets
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel
from starlette.middleware import Middleware

from huddle.config.settings import Settings
from huddle.errors import HuddleError, UsageError
from huddle.serve.guard import DEFAULT_LIMITS, Guard, Limits
from huddle.serve.hub import SessionNotFound
from huddle.storage.sessions import SessionStore
from huddle.storage.sqlite import Database, Migration
from huddle.usage import UsageLedger
from huddle.usage.budget import Budget, Limit

PREFIX = "hud"
_ID_BYTES = 6
_SECRET_BYTES = 32
_NAME_CHARS = 100
_TOUCH_EVERY_S = 60.0
"""``last_used`` is written at most this often per key: a write per request would contend with the ledger's."""
_DAY_S = 86_400.0
_NOTHING_LEFT = 1e-9
"""The run limit, in dollars, of a key whose day ran out after its turn was admitted: a limit of 0 is no limit."""

# Schema steps, oldest first (see `huddle.storage.sqlite`); a change is a new step at the end, never an edit here.
_SCHEMA = """
CREATE TABLE keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL, usd_per_day REAL, usd_per_session REAL,
    created REAL NOT NULL, last_used REAL, revoked REAL
);
CREATE TABLE owners (session_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, created REAL NOT NULL, used REAL NOT NULL);
CREATE INDEX owners_key ON owners(key_id, used);
"""
_MIGRATIONS: list[Migration] = [_SCHEMA]
_KEY_COLUMNS = "id, name, usd_per_day, usd_per_session, created, last_used, revoked"


class KeyBudgetSpent(HuddleError):
    """The key has spent its dollars for today or for this session; the turn was not started.

    429 with OpenAI's ``insufficient_quota`` type, as OpenAI answers an account out of credit, so clients that
    recognise that error (and the openai SDK's ``RateLimitError``) treat it as a quota, not as a bad request."""

    status = 429
    type = "insufficient_quota"  # the OpenAI error type `huddle.serve.openai_wire.error_json` answers with
    code = "budget_exceeded"


class ApiKey(BaseModel):
    """A key as listings show it: never the key itself, nor its hash."""

    id: str
    name: str
    usd_per_day: float | None = None
    usd_per_session: float | None = None
    created: datetime
    last_used: datetime | None = None
    revoked: datetime | None = None


class KeyStore:
    """The keys and the sessions' owners, in one SQLite file shared by the server's workers and the CLI."""

    def __init__(self, path: Path | None) -> None:
        self._db = Database(path, _MIGRATIONS, what="API key store")
        self._touched: dict[str, float] = {}

    @classmethod
    def of(cls, settings: Settings) -> KeyStore:
        """The store under the settings' data directory (``keys.sqlite``)."""
        return cls(settings.data_dir / "keys.sqlite")

    def add(self, name: str, *, usd_per_day: float | None = None, usd_per_session: float | None = None) -> str:
        """Make a key for `name` and return it: the only time it is seen, since only its hash is kept."""
        name = name.strip()
        if not name or not name.isprintable() or len(name) > _NAME_CHARS:
            raise UsageError(f"a key's name is 1 to {_NAME_CHARS} printable characters, got {name!r}")
        for flag, value in (("--usd-per-day", usd_per_day), ("--usd-per-session", usd_per_session)):
            if value is not None and not (value > 0 and math.isfinite(value)):  # `not >` also refuses nan
                raise UsageError(f"{flag} must be a positive number of dollars, got {value:g}; omit it for no limit")
        while True:
            key_id, secret = secrets.token_hex(_ID_BYTES), secrets.token_urlsafe(_SECRET_BYTES)
            try:
                with self._db.connection() as db:
                    db.execute(
                        "INSERT INTO keys (id, name, hash, usd_per_day, usd_per_session, created) VALUES (?,?,?,?,?,?)",
                        (key_id, name, _digest(secret), usd_per_day, usd_per_session, time.time()),
                    )
            except sqlite3.IntegrityError:  # an id drawn twice (one in 2^48): draw again
                continue
            return f"{PREFIX}_{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        with self._db.connection() as db:
            rows = db.execute(f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY created, id").fetchall()
        with self._db.parsing("the API keys"):
            return [_api_key(row) for row in rows]

    def get(self, key_id: str) -> ApiKey | None:
        with self._db.connection() as db:
            row = db.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE id = ?", (key_id,)).fetchone()
        with self._db.parsing("the API keys"):
            return _api_key(row) if row is not None else None

    def revoke(self, key_id: str) -> None:
        """Revoke a key from now on (a second revoke changes nothing); its sessions stay, reachable by no one."""
        with self._db.connection() as db:
            found = db.execute(
                "UPDATE keys SET revoked = COALESCE(revoked, ?) WHERE id = ?", (time.time(), key_id)
            ).rowcount
        if not found:
            raise HuddleError(f"no API key {key_id!r}; `huddle serve keys list` shows the keys' ids")

    def active(self) -> bool:
        """Whether any key is not revoked (then a server requires keys)."""
        with self._db.connection() as db:
            return db.execute("SELECT 1 FROM keys WHERE revoked IS NULL LIMIT 1").fetchone() is not None

    def verify(self, key: str) -> str | None:
        """The id of the key `key` (None: malformed, unknown or revoked), noting when it was last used."""
        prefix, _, rest = key.partition("_")
        key_id, _, secret = rest.partition("_")
        with self._db.connection() as db:
            row = db.execute("SELECT hash, revoked FROM keys WHERE id = ?", (key_id,)).fetchone()
        digest = _digest(secret)  # computed for an unknown id too: the answer takes as long either way
        if prefix != PREFIX or row is None or row[1] is not None or not hmac.compare_digest(row[0], digest):
            return None
        now = time.time()
        if now - self._touched.get(key_id, 0.0) >= _TOUCH_EVERY_S:
            self._touched[key_id] = now
            with self._db.connection() as db:
                db.execute("UPDATE keys SET last_used = ? WHERE id = ?", (now, key_id))
        return key_id

    def owner_of(self, session_id: str) -> str | None:
        with self._db.connection() as db:
            row = db.execute("SELECT key_id FROM owners WHERE session_id = ?", (session_id,)).fetchone()
        return str(row[0]) if row is not None else None

    def claim(self, session_id: str, key_id: str) -> str:
        """Make `session_id` `key_id`'s unless it is already someone's; returns its owner (the first to claim it,
        also when two workers claim it at once), noting that it is in use today."""
        now = time.time()
        with self._db.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO owners (session_id, key_id, created, used) VALUES (?,?,?,?)",
                (session_id, key_id, now, now),
            )
            db.execute("UPDATE owners SET used = ? WHERE session_id = ? AND key_id = ?", (now, session_id, key_id))
            (owner,) = db.execute("SELECT key_id FROM owners WHERE session_id = ?", (session_id,)).fetchone()
        return str(owner)

    def sessions_used_since(self, key_id: str, since: float) -> builtins.list[str]:
        with self._db.connection() as db:
            rows = db.execute("SELECT session_id FROM owners WHERE key_id = ? AND used >= ?", (key_id, since))
            return [str(session_id) for (session_id,) in rows]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class KeyAccess:
    """The hub's `Access` policy with API keys: sessions belong to keys, turns run within the key's budgets.

    `owner` None is the server itself (redoing a turn a crash interrupted at startup): it may use any session, under
    the budget of the key that owns it. `sessions_path` is the session store, so that a session made before keys
    were on is not taken over by the first key that names it."""

    def __init__(self, store: KeyStore, ledger: UsageLedger, sessions_path: Path | str | None = None) -> None:
        self.store = store
        self.ledger = ledger
        self.sessions_path = sessions_path

    @classmethod
    def of(cls, settings: Settings) -> KeyAccess:
        return cls(KeyStore.of(settings), UsageLedger(settings.ledger_location), settings.sessions_location)

    def claim(self, session_id: str, owner: str | None) -> None:
        if owner is None:
            return
        holder = self.store.owner_of(session_id)
        if holder != owner and (holder is not None or self._exists(session_id)):
            raise SessionNotFound(f"no session {session_id!r}")
        key = self.store.get(owner)
        if key is not None:
            self._refuse_if_spent(key, session_id)  # before the session becomes this key's
        if self.store.claim(session_id, owner) != owner:  # another worker claimed it first
            raise SessionNotFound(f"no session {session_id!r}")

    def owns(self, session_id: str, owner: str | None) -> bool:
        return owner is None or self.store.owner_of(session_id) == owner

    def budget(self, owner: str | None, session_id: str, budget: Budget) -> Budget:
        """Never raises (the hub asks as the turn starts running, past the point of refusing it): a day spent since
        `claim` checked it leaves the run next to nothing, and the governor refuses every call but the answer's."""
        owner = owner or self.store.owner_of(session_id)
        key = self.store.get(owner) if owner is not None else None
        if key is None:
            return budget
        day_left = key.usd_per_day - self._spent_today(key) if key.usd_per_day is not None else None
        run = _capped(budget.run, max(day_left, _NOTHING_LEFT) if day_left is not None else None)
        session = _capped(budget.session, key.usd_per_session)  # the governor counts the whole session's spending
        return budget.model_copy(update={"run": run, "session": session})

    def _refuse_if_spent(self, key: ApiKey, session_id: str) -> None:
        """`KeyBudgetSpent` when `key` has used up its session's or its day's dollars."""
        if key.usd_per_session is not None:
            spent = self.ledger.totals(session_id=session_id).cost_usd
            if spent >= key.usd_per_session:
                raise KeyBudgetSpent(
                    f"API key {key.name!r} has spent its ${key.usd_per_session:g} for this session "
                    f"(${spent:.6f}); start a new session"
                )
        if key.usd_per_day is not None:
            spent = self._spent_today(key)
            if spent >= key.usd_per_day:
                raise KeyBudgetSpent(
                    f"API key {key.name!r} has spent its ${key.usd_per_day:g} for today (${spent:.6f}, UTC day); "
                    "it can spend again after 00:00 UTC"
                )

    def _spent_today(self, key: ApiKey) -> float:
        """The ledger's cost of the key's sessions since 00:00 UTC."""
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        # Sessions used since yesterday's midnight: a turn begun before midnight may spend after it.
        return self.ledger.cost_since(midnight, self.store.sessions_used_since(key.id, midnight - _DAY_S))

    def _exists(self, session_id: str) -> bool:
        if self.sessions_path is None:
            return False
        with SessionStore(self.sessions_path) as sessions:
            return sessions.team_of(session_id) is not None

    def close(self) -> None:
        self.store.close()
        self.ledger.close()


def required(settings: Settings, host: str) -> bool:
    """Whether a server on `host` requires keys: whenever any is active (on loopback too, so adding a key locks the
    door everywhere); a server off loopback with none refuses to start (a `UsageError`: one line, exit 2)."""
    with KeyStore.of(settings) as store:
        if store.active():
            return True
    if loopback(host):
        return False
    raise UsageError(
        f"--host {host} listens beyond this machine, so huddle serve needs API keys: huddle serve keys add NAME "
        "(or serve on 127.0.0.1)"
    )


def loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve anywhere
        return False


def middleware(access: KeyAccess | None, limits: Limits = DEFAULT_LIMITS) -> list[Middleware]:
    """The guard: keys checked when `access` holds them, and the request limits always."""
    verify = access.store.verify if access is not None else None
    return [Middleware(Guard, verify=verify, limits=limits)]


def _capped(limit: Limit, usd: float | None) -> Limit:
    if usd is None:
        return limit
    return limit.model_copy(update={"max_usd": min(limit.max_usd, usd) if limit.max_usd else usd})


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _api_key(row: tuple[Any, ...]) -> ApiKey:
    """A row of `_KEY_COLUMNS` (times as Unix seconds, which pydantic reads as UTC datetimes)."""
    return ApiKey(**dict(zip(_KEY_COLUMNS.split(", "), row, strict=True)))
