"""The example suite on the embedded model (no key): it runs end to end, and only the model's wording can fail.

The deterministic parts (intent detection, plans, tools, the database) do not depend on the model, so every tool and
database expectation must hold whatever SmolLM2-135M writes; whether its replies say what the customer must be told
is what the pass rate measures (docs/benchmarks.md has the whole suite's number). Two scenarios with short replies
keep this under half a minute on two cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import huddle.evals.scenarios
from huddle.config.settings import load_settings

pytestmark = pytest.mark.local_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "support"


def test_the_suite_runs_end_to_end_on_the_embedded_model(tmp_path: Path) -> None:
    (tmp_path / "huddle.yaml").write_text("models:\n  local: {provider: local, max_tokens: 48}\n")
    suite = huddle.evals.scenarios.run(
        [EXAMPLES / "refund-outside-window.yaml", EXAMPLES / "order-status.yaml"],
        model="local",
        settings=load_settings(tmp_path / "huddle.yaml"),
    )
    trials = [t for s in suite.scenarios for t in s.trials]
    assert [t.status for t in trials if t.status == "error"] == [], [t.error for t in trials]
    assert all(t.replies and all(r.strip() for r in t.replies) for t in trials)
    for trial in trials:  # only what the model wrote may fail
        assert [c.name for c in trial.checks if not c.passed and not c.name.startswith("reply_")] == []
        assert trial.usage_by_agent.keys() == {"responder"} and trial.cost_usd == 0
    print(f"embedded model: pass^1 {suite.pass_hat_k['1']:.2f} on {len(trials)} trials")
