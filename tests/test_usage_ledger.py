"""The usage ledger: totals per run, agent, model and session; persistence across processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from huddle.usage import UsageLedger, UsageRecord, current_scope, usage_scope


def row(agent: str, model: str, prompt: int, completion: int, cost: float, **extra: object) -> UsageRecord:
    return UsageRecord(
        agent=agent,
        profile="p",
        model=model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=cost,
        **extra,  # type: ignore[arg-type]
    )


def test_totals_group_by_run_agent_model_and_session(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "usage.sqlite")
    ledger.record(row("planner", "gpt-4o-mini", 100, 20, 0.5, run_id="r1", session_id="s1"))
    ledger.record(row("responder", "gpt-4o-mini", 200, 40, 1.0, run_id="r1", session_id="s1"))
    ledger.record(row("manager", "local", 50, 5, 0.0, run_id="r2", session_id="s1", cached=True))
    ledger.record(row("planner", "gpt-4o-mini", 10, 0, 0.0, run_id="r2", session_id="s2", error="boom"))

    run1 = ledger.totals(run_id="r1")
    assert (run1.calls, run1.prompt_tokens, run1.completion_tokens, run1.total_tokens) == (2, 300, 60, 360)
    assert run1.cost_usd == pytest.approx(1.5)
    per_agent = ledger.by("agent", session_id="s1")
    assert {k: v.total_tokens for k, v in per_agent.items()} == {"manager": 55, "planner": 120, "responder": 240}
    per_model = ledger.by("model")
    assert per_model["gpt-4o-mini"].calls == 3 and per_model["local"].cached_calls == 1
    assert ledger.totals(session_id="s2").errors == 1
    assert [r.agent for r in ledger.records(run_id="r2")] == ["manager", "planner"]
    ledger.close()

    reopened = UsageLedger(tmp_path / "usage.sqlite")
    assert reopened.totals().calls == 4
    assert reopened.records()[0].id == 1


def test_unknown_filters_are_rejected() -> None:
    ledger = UsageLedger()
    with pytest.raises(ValueError, match="unknown usage filter"):
        ledger.totals(agnet="x")
    with pytest.raises(ValueError, match="cannot group"):
        ledger.by("cost_usd")  # type: ignore[arg-type]


def test_usage_scope_nests_and_restores() -> None:
    assert current_scope().run_id is None
    with usage_scope(run_id="outer", session_id="s"):
        with usage_scope(run_id="inner", session_id="s"):
            assert current_scope().run_id == "inner"
        assert current_scope().run_id == "outer"
    assert current_scope().run_id is None


def test_a_ledger_file_from_before_schema_versions_opens_and_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite"
    old = sqlite3.connect(path)  # an early ledger: only the usage table, no decisions tables, no user_version
    old.executescript(
        "CREATE TABLE usage (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, run_id TEXT, session_id TEXT,"
        " agent TEXT NOT NULL, profile TEXT NOT NULL, model TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,"
        " completion_tokens INTEGER NOT NULL, token_source TEXT NOT NULL, cost_usd REAL NOT NULL,"
        " latency_s REAL NOT NULL, cached INTEGER NOT NULL, streamed INTEGER NOT NULL, error TEXT);"
        "INSERT INTO usage (ts, run_id, agent, profile, model, prompt_tokens, completion_tokens, token_source,"
        " cost_usd, latency_s, cached, streamed) VALUES (1, 'r0', 'planner', 'p', 'm', 7, 3, 'server', 0, 0, 0, 0);"
    )
    old.close()
    ledger = UsageLedger(path)
    assert [(r.run_id, r.total_tokens) for r in ledger.records()] == [("r0", 10)]
    old_row = ledger.records()[0]  # from before prices were sourced: nothing cached, saved or priced
    assert (old_row.cached_tokens, old_row.reasoning_tokens, old_row.saved_usd, old_row.price_source) == (0, 0, 0, None)
    with usage_scope(run_id="r1"):
        ledger.record_decision(1, "planner", "rule", "first turn")
    assert ledger.decisions("r1") == [{"turn": 1, "speaker": "planner", "policy": "rule", "reason": "first turn"}]
    ledger.record(UsageRecord(agent="a", profile="p", model="m", prompt_tokens=9, cached_tokens=4, saved_usd=0.5))
    assert (ledger.totals().cached_tokens, ledger.totals().saved_usd) == (4, 0.5)
    ledger.close()
    # the schema before versions, the call state, cached/reasoning tokens and prices, then call keys and hosts
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (4,)


def test_a_ledger_from_a_newer_huddle_is_refused_with_one_error_line(isolated_env: Path) -> None:
    isolated_env.mkdir(parents=True)
    newer = sqlite3.connect(isolated_env / "usage.sqlite")
    newer.execute("PRAGMA user_version = 9")
    newer.close()
    proc = subprocess.run([sys.executable, "-m", "huddle", "usage"], capture_output=True, text=True, env=os.environ)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: the usage ledger ") and "schema version 9" in proc.stderr
    assert "upgrade huddle-agents" in proc.stderr and "Traceback" not in proc.stderr
    assert sqlite3.connect(isolated_env / "usage.sqlite").execute("PRAGMA user_version").fetchone() == (9,)
