"""Durable sessions: a chat survives its process, even a SIGKILL in the middle of a turn.

A session is a sequence of turns (one user message and the team's reply each) in SQLite (`huddle.storage.sqlite`, WAL
mode) under the data directory, or in PostgreSQL (`huddle.storage.postgres`, a ``postgresql://`` URL) shared by
many hosts. A turn is written twice, each time in one transaction: when it starts (the user's
message is acknowledged, status ``running``) and when it ends: ``done`` with the team's saved state, the plan, the
manager's decisions and the turn's messages; ``failed`` when the run raised or ended with no answer, or ``cancelled``
when the user interrupted it, each with the reason in ``error`` and no state (the conversation goes on from the last
``done`` turn); ``awaiting_approval`` when a tool call waits for a person, with the team's state and the paused run's
(``run_state``) so any process can take it up (`huddle.agents.approval`). A process that dies mid-turn leaves that
turn ``running``; resuming loads the state of the last finished turn and redoes the unfinished one once, so every
acknowledged message ends up in the conversation exactly once. A failed or cancelled turn is not redone: the user saw
it end, and may send the message again.

The state a session goes on from is the one saved by the turn that finished last, not the highest-numbered one: a
turn left unfinished while later ones ran (the user sent turn 3 instead of resuming turn 2) is redone on top of
them, and its exchange then comes after theirs in the conversation the team sees (1, 3, 2), while `turns` still
lists them by number. Usage rows are in the
ledger (``usage.sqlite``), written per call, keyed by the same run id.

A process leases the sessions it opens (`lease`, `huddle.storage.lease`) until it closes the store, so one session
is never run by two processes at once; a second one gets `SessionBusyError` naming the first. On PostgreSQL the
lease is an advisory lock of the server, so it holds across hosts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel

from huddle.errors import HuddleError
from huddle.secrets import redact
from huddle.storage import is_url, open_database
from huddle.storage.lease import SessionLease
from huddle.storage.sqlite import Connection, Migration, columns

if TYPE_CHECKING:
    from huddle.storage.postgres import PostgresDatabase, PostgresLease

TurnStatus = Literal["running", "done", "failed", "cancelled", "awaiting_approval"]
EndStatus = Literal["done", "failed", "cancelled", "awaiting_approval"]

# Schema steps, oldest first (see `huddle.storage.sqlite`); a change is a new step at the end, never an edit here.
_TABLES = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, team TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    turn INTEGER NOT NULL, run_id TEXT NOT NULL, task TEXT NOT NULL, status TEXT NOT NULL,
    answer TEXT, state TEXT, plan TEXT, decisions TEXT, messages TEXT, started REAL NOT NULL, finished REAL,
    PRIMARY KEY (session_id, turn)
);
"""


def _add_turn_error(db: Connection) -> None:
    """Turns that fail or are cancelled keep why in ``error``. A file from before versions may already have the column
    (it was added ad hoc then), so it is added only when missing."""
    if "error" not in columns(db, "turns"):
        db.execute("ALTER TABLE turns ADD COLUMN error TEXT")


def _add_run_state(db: Connection) -> None:
    """A turn that paused for approvals keeps its run (task, plan, step results, pending calls) beside the team's
    state. Added only when missing, as ``error`` is: a file the tests (or an ad-hoc upgrade) set back may have it."""
    if "run_state" not in columns(db, "turns"):
        db.execute("ALTER TABLE turns ADD COLUMN run_state TEXT")


_MIGRATIONS: list[Migration] = [_TABLES, _add_turn_error, _add_run_state]


class Turn(BaseModel):
    """One user message and what the team did with it."""

    session_id: str
    turn: int
    run_id: str
    task: str
    status: TurnStatus
    answer: str | None = None
    plan: dict[str, Any] | None = None
    decisions: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    started: float
    finished: float | None = None
    error: str | None = None
    """Why a ``failed`` or ``cancelled`` turn ended."""


class SessionSummary(BaseModel):
    id: str
    team: str
    created: float
    updated: float
    turns: int
    unfinished: int


class SessionStore:
    """Sessions and their turns in one SQLite file or PostgreSQL database; safe to share between threads of one
    process."""

    def __init__(self, location: Path | str) -> None:
        """A store in `location`: a file, or a ``postgresql://`` URL."""
        self.path = None if is_url(location) else Path(location)
        self._db = open_database(location, _MIGRATIONS, what="sessions store")
        self._leases: dict[str, SessionLease | PostgresLease] = {}

    def lease(self, session_id: str) -> None:
        """Hold `session_id` for this process until `close` (see `huddle.storage.lease`); raise `SessionBusyError`
        when another process has it."""
        if session_id not in self._leases:
            lease = (
                SessionLease(self.path.with_name(f"{self.path.stem}.locks"), session_id)
                if self.path is not None
                else cast("PostgresDatabase", self._db).lease(session_id)  # no file: the server's lock
            )
            lease.acquire()
            self._leases[session_id] = lease

    def begin_turn(self, session_id: str, team: str, task: str, run_id: str) -> int:
        """Acknowledge a user message: a new ``running`` turn (and the session, if new). Returns the turn number.

        The task is stored with anything shaped like a key masked: a key pasted into a chat must not live on disk.
        """
        task = redact(task)
        now = time.time()
        with self._db.transaction() as db:
            row = db.execute("SELECT team FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (session_id, team, now, now))
            elif row[0] != team:
                raise HuddleError(f"session {session_id!r} belongs to team {row[0]!r}, not {team!r}")
            (last,) = db.execute(
                "SELECT COALESCE(MAX(turn), 0) FROM turns WHERE session_id = ?", (session_id,)
            ).fetchone()
            db.execute(
                "INSERT INTO turns (session_id, turn, run_id, task, status, started) VALUES (?,?,?,?,?,?)",
                (session_id, last + 1, run_id, task, "running", now),
            )
            db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id))
        return int(last) + 1

    def restart_turn(self, session_id: str, turn: int, run_id: str) -> None:
        """Redo an unfinished turn under a new run id (the old attempt's usage stays in the ledger)."""
        with self._db.connection() as db:
            db.execute(
                "UPDATE turns SET run_id = ?, started = ? WHERE session_id = ? AND turn = ? AND status = 'running'",
                (run_id, time.time(), session_id, turn),
            )

    def finish_turn(
        self,
        session_id: str,
        turn: int,
        *,
        status: EndStatus = "done",
        answer: str | None = None,
        state: dict[str, Any] | None = None,
        plan: dict[str, Any] | None = None,
        decisions: list[dict[str, Any]] | None = None,
        messages: list[dict[str, Any]] | None = None,
        error: str | None = None,
        run_state: dict[str, Any] | None = None,
    ) -> None:
        """Record how the running turn ended and, when ``done``, the team's state after it, in one transaction; a
        turn ``awaiting_approval`` also keeps its paused `run_state`. A turn that already ended keeps its first
        ending (a cancellation racing the turn's own end)."""
        if status in ("done", "awaiting_approval") and state is None:
            raise ValueError(f"a {status} turn needs the team's state")
        answer = None if answer is None else redact(answer)
        if messages is not None:  # the user's own words are in them too
            messages = [
                {**m, "content": redact(m["content"])} if isinstance(m.get("content"), str) else m for m in messages
            ]
        now = time.time()
        with self._db.transaction() as db:
            db.execute(
                "UPDATE turns SET status = ?, answer = ?, state = ?, plan = ?, decisions = ?, messages = ?, "
                "finished = ?, error = ?, run_state = ? WHERE session_id = ? AND turn = ? AND status = 'running'",
                (
                    status,
                    answer,
                    None if state is None else json.dumps(state),
                    json.dumps(plan),
                    json.dumps(decisions or []),
                    json.dumps(messages or []),
                    now,
                    error,
                    None if run_state is None else json.dumps(run_state),
                    session_id,
                    turn,
                ),
            )
            db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id))

    def turns(self, session_id: str) -> list[Turn]:
        with self._db.connection() as db:
            rows = db.execute(
                "SELECT session_id, turn, run_id, task, status, answer, plan, decisions, messages, started, finished, "
                "error FROM turns WHERE session_id = ? ORDER BY turn",
                (session_id,),
            ).fetchall()
        with self._db.parsing(f"the turns of session {session_id}"):
            return [
                Turn(
                    session_id=r[0],
                    turn=r[1],
                    run_id=r[2],
                    task=r[3],
                    status=r[4],
                    answer=r[5],
                    plan=json.loads(r[6]) if r[6] else None,
                    decisions=json.loads(r[7] or "[]"),
                    messages=json.loads(r[8] or "[]"),
                    started=r[9],
                    finished=r[10],
                    error=r[11],
                )
                for r in rows
            ]

    def saved_state(self, session_id: str) -> dict[str, Any] | None:
        """The team's state after the turn that finished last (None for a new session): a redone turn 2 finishes
        after turn 3, and its state is the only one that holds both."""
        with self._db.connection() as db:
            row = db.execute(
                "SELECT state FROM turns WHERE session_id = ? AND status = 'done' ORDER BY finished DESC, turn DESC "
                "LIMIT 1",
                (session_id,),
            ).fetchone()
        with self._db.parsing(f"the saved state of session {session_id}"):
            return json.loads(row[0]) if row and row[0] else None

    def unfinished(self, session_id: str) -> Turn | None:
        """The turn that was in flight when its process died, if any (failed and cancelled turns ended in view of the
        user, so they are not offered again)."""
        return next((t for t in self.turns(session_id) if t.status == "running"), None)

    def awaiting(self, session_id: str) -> tuple[Turn, dict[str, Any], dict[str, Any]] | None:
        """The turn that paused for approvals, if any, with the team's state and the run's as it paused."""
        with self._db.connection() as db:
            row = db.execute(
                "SELECT turn, state, run_state FROM turns WHERE session_id = ? AND status = 'awaiting_approval' "
                "ORDER BY turn DESC LIMIT 1",
                (session_id,),
            ).fetchone()
        if row is None:
            return None
        turn = next(t for t in self.turns(session_id) if t.turn == row[0])
        with self._db.parsing(f"the paused turn {row[0]} of session {session_id}"):
            return turn, json.loads(row[1]), json.loads(row[2])

    def take_up(self, session_id: str, turn: int, run_id: str) -> None:
        """A paused turn runs again (its approvals decided) under `run_id`: ``running`` until it ends, its run state
        kept (and `checkpoint`-ed) until then, so a process that dies while it runs leaves the decisions behind."""
        with self._db.connection() as db:
            db.execute(
                "UPDATE turns SET status = 'running', run_id = ? WHERE session_id = ? AND turn = ? "
                "AND status = 'awaiting_approval'",
                (run_id, session_id, turn),
            )

    def checkpoint(self, session_id: str, turn: int, *, state: dict[str, Any], run_state: dict[str, Any]) -> None:
        """Keep the team's and the run's state of a paused turn being taken up, as it goes (its decisions, which
        approved calls have run): what `reopen_interrupted` gives back after a crash."""
        with self._db.connection() as db:
            db.execute(
                "UPDATE turns SET state = ?, run_state = ? WHERE session_id = ? AND turn = ? AND status = 'running'",
                (json.dumps(state), json.dumps(run_state), session_id, turn),
            )

    def reopen_interrupted(self, session_id: str) -> bool:
        """A paused turn whose taking up a crash cut short is paused again, with the decisions and results it kept
        (a running turn with a run state is one); whether there was one."""
        with self._db.connection() as db:
            changed = db.execute(
                "UPDATE turns SET status = 'awaiting_approval' WHERE session_id = ? AND status = 'running' "
                "AND run_state IS NOT NULL",
                (session_id,),
            ).rowcount
        return bool(changed)

    def drop_awaiting(self, session_id: str, reason: str) -> None:
        """A paused turn whose calls will never be decided (a new message came first) ends ``cancelled``."""
        with self._db.connection() as db:
            db.execute(
                "UPDATE turns SET status = 'cancelled', error = ?, run_state = NULL, finished = ? "
                "WHERE session_id = ? AND status = 'awaiting_approval'",
                (reason, time.time(), session_id),
            )

    def sessions(self) -> list[SessionSummary]:
        with self._db.connection() as db:
            rows = db.execute(
                "SELECT s.id, s.team, s.created, s.updated, COUNT(t.turn), "
                "COALESCE(SUM(CASE WHEN t.status = 'running' THEN 1 ELSE 0 END), 0) "
                "FROM sessions s LEFT JOIN turns t ON t.session_id = s.id "
                "GROUP BY s.id ORDER BY s.updated DESC"
            ).fetchall()
        with self._db.parsing("the list of sessions"):
            return [
                SessionSummary(id=r[0], team=r[1], created=r[2], updated=r[3], turns=r[4], unfinished=r[5])
                for r in rows
            ]

    def turn_of_run(self, run_id: str) -> Turn | None:
        """The turn a run id belongs to (a served response is named after its run: ``previous_response_id``)."""
        with self._db.connection() as db:
            row = db.execute("SELECT session_id FROM turns WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        return next((t for t in self.turns(row[0]) if t.run_id == run_id), None)

    def continued_by(self, team: str, task: str, answer: str) -> list[str]:
        """The sessions of `team` whose last finished turn is `task` answered with `answer`, newest first: the
        sessions a stateless client resending its history (that exchange last) is continuing. Both are compared
        masked, as they were saved."""
        with self._db.connection() as db:
            rows = db.execute(
                "SELECT t.session_id FROM turns t JOIN sessions s ON s.id = t.session_id "
                "WHERE s.team = ? AND t.status = 'done' AND t.task = ? AND t.answer = ? AND t.finished = "
                "(SELECT MAX(u.finished) FROM turns u WHERE u.session_id = t.session_id AND u.status = 'done') "
                "ORDER BY s.updated DESC",
                (team, redact(task), redact(answer)),
            ).fetchall()
        return [r[0] for r in rows]

    def team_of(self, session_id: str) -> str | None:
        with self._db.connection() as db:
            row = db.execute("SELECT team FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return row[0] if row else None

    def delete(self, session_id: str) -> bool:
        """Delete a session, unless another process has it open (its next turn would be written to nothing)."""
        self.lease(session_id)
        with self._db.connection() as db:
            deleted = db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount
        return bool(deleted)

    def close(self) -> None:
        """Close the file and give up this process's leases."""
        for lease in self._leases.values():
            lease.release()
        self._leases.clear()
        self._db.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _masked(message: dict[str, Any]) -> dict[str, Any]:
    """A saved message with anything shaped like a key in its text masked."""
    content = message.get("content")
    return {**message, "content": redact(content)} if isinstance(content, str) else message
