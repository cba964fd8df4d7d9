"""The usage ledger: totals per run, agent, model and session; persistence across processes."""

from __future__ import annotations

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
