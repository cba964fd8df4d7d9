"""A damaged, foreign, read-only or full store is one `StorageError` naming the file and what to do, never a raw
sqlite3 traceback, and the file is left as it was (the user may want it back)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from huddle.errors import ExitCode
from huddle.storage import sqlite as storage
from huddle.storage.sessions import SessionStore
from huddle.storage.sqlite import StorageError
from huddle.teams.base import RunResult
from huddle.teams.durable import DurableTeam
from huddle.usage import UsageLedger, UsageRecord


def _use_ledger(path: Path) -> None:
    with_ledger = UsageLedger(path)
    try:
        with_ledger.record(UsageRecord(agent="a", profile="p", model="m", run_id="r"))
        with_ledger.totals()
    finally:
        with_ledger.close()


def _use_sessions(path: Path) -> None:
    with SessionStore(path) as store:
        turn = store.begin_turn("s", "team", "hello", "r")
        store.finish_turn("s", turn, answer="hi", state={})
        store.sessions()


STORES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "usage ledger": ("usage.sqlite", _use_ledger),
    "sessions store": ("sessions.sqlite", _use_sessions),
}


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _pages_overwritten(path: Path) -> None:
    """A real store whose header survives but whose pages after the first are garbage (a torn copy)."""
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)
    path.write_bytes(bytes(data))


def _truncated_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:50])


def _schema_wiped(path: Path) -> None:
    """The first page (header and schema) zeroed past the magic string: SQLite cannot read the file at all."""
    data = bytearray(path.read_bytes())
    data[16:4096] = b"\x00" * (4096 - 16)
    path.write_bytes(bytes(data))


DAMAGE = {
    "garbage": _garbage,
    "pages overwritten": _pages_overwritten,
    "truncated header": _truncated_header,
    "schema wiped": _schema_wiped,
}


def _real_store(folder: Path, store: str) -> Path:
    """A store with some rows in it, closed cleanly (its WAL folded back into the file)."""
    name, use = STORES[store]
    path = folder / name
    for _ in range(40):
        use(path)
    return path


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("store", STORES)
def test_a_damaged_store_is_one_error_and_stays_as_it_was(tmp_path: Path, store: str, damage: str) -> None:
    path = _real_store(tmp_path, store)
    DAMAGE[damage](path)
    before = path.read_bytes()
    with pytest.raises(StorageError) as caught:
        STORES[store][1](path)
    message = str(caught.value)
    assert message.startswith(f"the {store} {path} cannot be used (") and "move it aside" in message, message
    assert path.read_bytes() == before


ROW_DAMAGE = {
    "text not UTF-8": ("usage.sqlite", "UPDATE usage SET model = CAST(X'6DFF' AS TEXT)", "a stored text is not UTF-8"),
    "usage row of the wrong type": (
        "usage.sqlite",
        "UPDATE usage SET token_source = 'guess'",
        "usage rows do not parse",
    ),
    "turn text not UTF-8": ("sessions.sqlite", "UPDATE turns SET status = CAST(X'64FF' AS TEXT)", "not UTF-8"),
    "turn JSON damaged": ("sessions.sqlite", "UPDATE turns SET messages = '[{'", "turns of session s do not parse"),
    "turn status unknown": ("sessions.sqlite", "UPDATE turns SET status = 'dome'", "turns of session s do not parse"),
    "state JSON damaged": ("sessions.sqlite", "UPDATE turns SET state = '{'", "saved state of session s do not parse"),
}


@pytest.mark.parametrize("damage", ROW_DAMAGE)
def test_rows_sqlite_reads_but_we_cannot_are_damage_too(tmp_path: Path, damage: str) -> None:
    """Bytes damaged inside a cell pass SQLite's checks; parsing the row is where the store finds out."""
    name, sql, expected = ROW_DAMAGE[damage]
    path = tmp_path / name
    use = STORES["usage ledger" if name == "usage.sqlite" else "sessions store"][1]
    use(path)
    raw = sqlite3.connect(path)
    raw.execute(sql)
    raw.commit()
    raw.close()
    with pytest.raises(StorageError, match=f"cannot be used \\(.*{expected}.*\\): it is damaged; move it aside"):
        if name == "usage.sqlite":
            ledger = UsageLedger(path)
            try:
                ledger.records()
                ledger.by("model")
            finally:
                ledger.close()
        else:
            with SessionStore(path) as store:
                store.saved_state("s")
                store.turns("s")


@pytest.mark.parametrize("store", STORES)
def test_an_empty_file_is_a_new_store(tmp_path: Path, store: str) -> None:
    """A 0-byte file holds nothing to lose: it is used as a new, empty store (documented in huddle.storage.sqlite)."""
    name, use = STORES[store]
    (tmp_path / name).touch()
    use(tmp_path / name)


def _read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every store opened read-only, as SQLite opens a file it may not write (this works for root too)."""
    connect = sqlite3.connect

    def read_only(database: str, **kwargs: Any) -> sqlite3.Connection:
        return connect(f"file:{database}?mode=ro", uri=True, **kwargs)

    monkeypatch.setattr(storage.sqlite3, "connect", read_only)


@pytest.mark.parametrize("store", STORES)
def test_a_read_only_store_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str) -> None:
    path = _real_store(tmp_path, store)
    _read_only(monkeypatch)
    with pytest.raises(StorageError, match=f"make {tmp_path} writable, or choose another --data-dir"):
        STORES[store][1](path)


def _small_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every store opened from now on may grow by four pages at most, as on a disk that is all but full."""
    connect = sqlite3.connect

    def small_disk(database: str, **kwargs: Any) -> sqlite3.Connection:
        connection = connect(database, **kwargs)
        (pages,) = connection.execute("PRAGMA page_count").fetchone()
        connection.execute(f"PRAGMA max_page_count = {pages + 4}")
        return connection

    monkeypatch.setattr(storage.sqlite3, "connect", small_disk)


def test_a_full_disk_reports_itself_not_a_failed_rollback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite rolls back by itself on a full disk; our ROLLBACK after it must not replace the real error."""
    path = tmp_path / "sessions.sqlite"
    _use_sessions(path)
    _small_disk(monkeypatch)
    with SessionStore(path) as store:
        turn = store.begin_turn("s", "team", "hello again", "r2")
        with pytest.raises(StorageError, match=r"\(database or disk is full\): the disk is full; free some space"):
            store.finish_turn("s", turn, answer="y" * 1_000_000, state={})
        assert store.unfinished("s") is not None  # the turn is still there to redo once there is room


class _Team:
    """Just enough of a team for `DurableTeam`: its state is the last task it was given, its answer a long one."""

    spec = SimpleNamespace(team=SimpleNamespace(name="desk"))
    state = SimpleNamespace(plan=None)

    def __init__(self) -> None:
        self.memory = ""

    async def save_state(self) -> dict[str, Any]:
        return {"memory": self.memory}

    async def load_state(self, state: dict[str, Any]) -> None:
        self.memory = state["memory"]

    async def run_stream(self, task: str, *, run_id: str) -> AsyncIterator[RunResult]:
        self.memory = task
        yield RunResult.model_construct(answer=task * 100_000, stop_reason="done", messages=[], decisions=[])


async def _turn(durable: DurableTeam, task: str) -> None:
    async for _ in durable.run_stream(task):
        pass


async def test_a_turn_the_full_disk_refused_is_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The team goes back to the last saved turn (not on to the unsaved one), the turn is recorded failed, and the
    user sees the disk's error."""
    path = tmp_path / "sessions.sqlite"
    with SessionStore(path) as store:
        await _turn(DurableTeam(_Team(), store, "S"), "small")  # type: ignore[arg-type]
    _small_disk(monkeypatch)
    team = _Team()
    with SessionStore(path) as store:
        durable = DurableTeam(team, store, "S")  # type: ignore[arg-type]
        await durable.open()
        with pytest.raises(StorageError, match="the disk is full"):
            await _turn(durable, "big")
        assert team.memory == "small"
        last = store.turns("S")[-1]  # its failure is small enough to record, unlike its answer
        assert last.status == "failed" and last.error is not None and "disk is full" in last.error
        assert store.saved_state("S") == {"memory": "small"}


def _huddle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huddle", *args], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize(("command", "name"), [("usage", "usage.sqlite"), ("sessions list", "sessions.sqlite")])
def test_the_cli_names_the_damaged_file(tmp_path: Path, command: str, name: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / name).write_bytes(b"not a database" * 100)
    proc = _huddle("--data-dir", str(data), *command.split())
    assert proc.returncode == ExitCode.FAILED
    assert f"{data / name} cannot be used (file is not a database)" in _one_error_line(proc)
    assert (data / name).read_bytes() == b"not a database" * 100


def test_a_data_dir_that_is_a_file_is_one_error(tmp_path: Path) -> None:
    afile = tmp_path / "notes.txt"
    afile.write_text("mine\n")
    for command in ("usage", "sessions list", "runs"):
        proc = _huddle("--data-dir", str(afile), *command.split())
        line = _one_error_line(proc)
        assert proc.returncode == ExitCode.USAGE and f"{afile} is a file, not a folder" in line, (command, line)
    assert afile.read_text() == "mine\n"
