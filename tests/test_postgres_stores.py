"""The usage ledger and the session store on a real PostgreSQL server (`huddle.storage.postgres`), and the call keys
that make a redelivered call one row on both backends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from huddle.storage import location, open_database
from huddle.storage.lease import SessionBusyError
from huddle.storage.postgres import PostgresDatabase, masked
from huddle.storage.sessions import _MIGRATIONS as SESSION_STEPS
from huddle.storage.sessions import SessionStore
from huddle.storage.sqlite import Database, SchemaTooNewError, StorageError
from huddle.usage.ledger import _MIGRATIONS as LEDGER_STEPS
from huddle.usage.ledger import INTERRUPTED, UsageLedger, UsageRecord, usage_scope
from tests.postgres import _free_port, fresh_database, postgres_url

__all__ = ["postgres_url"]  # the fixture, imported for pytest


@pytest.fixture
def url(postgres_url: str) -> str:
    return fresh_database(postgres_url)


def _call(**fields: object) -> UsageRecord:
    return UsageRecord(agent="writer", profile="fast", model="gpt-x", **fields)


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_location_picks_the_url_when_one_is_configured(tmp_path: Path) -> None:
    assert location(None, tmp_path / "usage.sqlite") == tmp_path / "usage.sqlite"
    assert location("postgresql://u@h/db", tmp_path / "usage.sqlite") == "postgresql://u@h/db"
    assert isinstance(open_database(tmp_path / "x.sqlite", [], what="test store"), Database)
    assert masked("postgresql://u:pw@h:5/db?sslmode=require&password=pw") == (
        "postgresql://u:***@h:5/db?sslmode=require&password=***"
    )


def test_the_ledger_round_trips_on_postgres(url: str) -> None:
    ledger = UsageLedger(url)
    ts = 1_790_000_000.123456  # a float4 would keep about 1.79e9, not the seconds
    with usage_scope(run_id="r1", session_id="s1"):
        first = ledger.record(_call(ts=ts, prompt_tokens=10, completion_tokens=5, cost_usd=0.25, cached=True))
        row = ledger.begin(_call(ts=ts + 1, run_id="r1", session_id="s1"))
        ledger.record_decision(1, "writer", "rule", "first turn")
        ledger.record_budget_decision("writer", "trim", "over budget")
    ledger.settle(row, _call(ts=ts + 2, run_id="r1", session_id="s1", prompt_tokens=3, price_source="unknown"))
    records = ledger.records()
    assert [r.id for r in records] == [first.id, row]
    assert records[0].ts == ts and records[0].cached is True and records[1].state == "done"
    totals = ledger.totals(run_id="r1")
    assert (totals.calls, totals.prompt_tokens, totals.unpriced_calls) == (1, 3, 1)
    everything = ledger.totals()
    assert (everything.calls, everything.cached_calls, everything.cost_usd) == (2, 1, 0.25)
    assert set(ledger.by("run_id")) == {"-", "r1"}
    assert ledger.cost_since(0, ["s1"]) == 0.0 and ledger.cost_since(0, ["nope"]) == 0.0
    assert ledger.decisions("r1") == [{"turn": 1, "speaker": "writer", "policy": "rule", "reason": "first turn"}]
    assert ledger.budget_decisions("r1") == [{"agent": "writer", "action": "trim", "reason": "over budget"}]
    ledger.close()


def test_two_hosts_on_one_database_see_each_others_calls(url: str) -> None:
    host_a, host_b = UsageLedger(url), UsageLedger(url)
    host_a.record(_call(session_id="s", cost_usd=1.0))
    host_b.record(_call(session_id="s", cost_usd=2.0))
    assert host_a.totals(session_id="s").cost_usd == host_b.totals(session_id="s").cost_usd == 3.0
    # A call in flight on another host is that host's to settle; a dead process of this host's is interrupted.
    dead = _dead_pid()
    elsewhere = host_a.begin(_call())
    here = host_a.begin(_call())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE usage SET pid = %s, host = 'another-host' WHERE id = %s", (dead, elsewhere))
        conn.execute("UPDATE usage SET pid = %s WHERE id = %s", (dead, here))
    third = UsageLedger(url)
    states = {r.id: (r.state, r.error) for r in third.records()}
    assert states[elsewhere] == ("in_flight", None)
    assert states[here] == ("interrupted", INTERRUPTED)
    for ledger in (host_a, host_b, third):
        ledger.close()


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_a_call_key_is_written_once(backend: str, url: str, tmp_path: Path) -> None:
    ledger = UsageLedger(url if backend == "postgres" else tmp_path / "usage.sqlite")
    key = "wf-1/activity-3/1"
    row = ledger.begin(_call(prompt_tokens=7), key=key)
    assert ledger.begin(_call(prompt_tokens=99), key=key) == row  # a redelivered attempt: the same row, no write
    other = ledger.begin(_call(), key="wf-1/activity-3/2")
    ledger.begin(_call())  # no key: every call its own row
    ledger.begin(_call())
    assert other != row and len(ledger.records()) == 4
    ledger.settle(row, _call(prompt_tokens=7, completion_tokens=1))
    assert [r.prompt_tokens for r in ledger.records() if r.id == row] == [7]
    ledger.close()


def test_sessions_round_trip_on_postgres(url: str) -> None:
    store = SessionStore(url)
    first = store.begin_turn("s1", "team", "hello", "run-1")
    store.finish_turn("s1", first, answer="hi", state={"n": 1}, messages=[{"source": "user", "content": "hello"}])
    second = store.begin_turn("s1", "team", "and then?", "run-2")
    assert (first, second) == (1, 2)
    assert store.saved_state("s1") == {"n": 1}
    assert store.unfinished("s1") is not None and store.unfinished("s1").turn == 2  # type: ignore[union-attr]
    [summary] = store.sessions()
    assert (summary.id, summary.turns, summary.unfinished) == ("s1", 2, 1)
    store.finish_turn("s1", second, status="awaiting_approval", state={"n": 2}, run_state={"pending": ["call"]})
    paused = store.awaiting("s1")
    assert paused is not None and paused[1:] == ({"n": 2}, {"pending": ["call"]})
    assert store.continued_by("team", "hello", "hi") == ["s1"]
    assert store.turn_of_run("run-1") is not None and store.team_of("s1") == "team"
    store.close()
    again = SessionStore(url)  # another process, or another host, on the same database
    assert [t.task for t in again.turns("s1")] == ["hello", "and then?"]
    assert again.delete("s1") and again.sessions() == []
    again.close()


def test_a_session_is_leased_across_stores_on_one_database(url: str) -> None:
    one, two = SessionStore(url), SessionStore(url)
    one.lease("s1")
    with pytest.raises(SessionBusyError, match="session s1 is in use"):
        two.lease("s1")
    two.lease("s2")
    one.close()  # releases s1
    two.lease("s1")
    two.close()


def test_old_postgres_schemas_are_brought_up_to_date(url: str) -> None:
    old = PostgresDatabase(url, LEDGER_STEPS[:3], what="usage ledger")  # before call keys and hosts
    with old.connection() as db:
        db.execute(
            "INSERT INTO usage (ts, agent, profile, model, prompt_tokens, completion_tokens, token_source, cost_usd, "
            "latency_s, cached, streamed, state) VALUES (1, 'a', 'p', 'm', 4, 2, 'server', 0.5, 0.1, 0, 0, 'done')"
        )
    old.close()
    PostgresDatabase(url, SESSION_STEPS[:1], what="sessions store").close()  # before turns kept an error
    ledger = UsageLedger(url)
    assert [(r.prompt_tokens, r.cost_usd) for r in ledger.records()] == [(4, 0.5)]
    assert ledger.begin(_call(), key="k") == ledger.begin(_call(), key="k")
    ledger.close()
    store = SessionStore(url)
    turn = store.begin_turn("s", "team", "task", "run")
    store.finish_turn("s", turn, status="failed", error="boom")
    assert store.turns("s")[0].error == "boom"
    store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        versions: dict[str, int] = dict(conn.execute("SELECT store, version FROM huddle_schema").fetchall())
        assert versions == {"usage ledger": 4, "sessions store": 3}
        conn.execute("UPDATE huddle_schema SET version = 9 WHERE store = 'usage ledger'")
    with pytest.raises(SchemaTooNewError, match="schema version 9, but this huddle knows only up to 4"):
        UsageLedger(url)


def test_an_unusable_postgres_is_one_error_without_the_password(url: str) -> None:
    port = _free_port()  # nothing listens there
    for bad, reason in (
        (f"postgresql://huddle:s3cret-pw@127.0.0.1:{port}/huddle", "refused"),
        (url.rsplit("/", 1)[0] + "/no_such_db", 'database "no_such_db" does not exist'),
    ):
        with pytest.raises(StorageError) as caught:
            UsageLedger(bad)
        message = str(caught.value)
        assert message.startswith("the usage ledger at postgresql://") and ":***@127.0.0.1:" in message
        assert reason in message and "s3cret-pw" not in message and "\n" not in message
    with pytest.raises(StorageError, match=r"the sessions store at postgresql://huddle:\*\*\*@"):
        SessionStore(f"postgresql://huddle:s3cret-pw@127.0.0.1:{port}/huddle")
