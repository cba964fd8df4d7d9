"""This project's tests, offline (no key, no network): the custom tool on its own, then the support scenarios on the
scripted model of scenarios/models/scripted.yaml."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from shop_tools import shipping_quote

import huddle.evals.scenarios
from huddle.config.settings import load_settings

PROJECT = Path(__file__).resolve().parent.parent


def test_shipping_quote_prices_by_destination_and_weight() -> None:
    result = asyncio.run(shipping_quote.run({"country": "de", "weight_kg": 2}))
    assert result.ok, result.content
    assert json.loads(result.content) == {"country": "DE", "days": "2-4", "price_eur": 10.5}


def test_shipping_quote_refuses_what_the_shop_does_not_do() -> None:
    nowhere = asyncio.run(shipping_quote.run({"country": "JP"}))
    assert not nowhere.ok and "we do not ship to 'JP'" in nowhere.content
    too_heavy = asyncio.run(shipping_quote.run({"country": "DE", "weight_kg": 31}))
    assert too_heavy.error_kind == "invalid_arguments" and too_heavy.attempts == 0  # refused before the call


def test_scenarios_pass_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "HUDDLE_MODEL"):
        monkeypatch.delenv(name, raising=False)  # proof that no key is needed
    settings = load_settings(PROJECT / "huddle.yaml", data_dir=tmp_path)  # the run's ledger and traces stay here
    suite = huddle.evals.scenarios.run([PROJECT / "scenarios"], settings=settings, trials=2)
    problems = [f"{t.scenario} #{t.trial}: {p}" for s in suite.scenarios for t in s.trials for p in t.failures]
    problems += [f"{t.scenario} #{t.trial}: {t.error}" for s in suite.scenarios for t in s.trials if t.error]
    assert suite.passed, problems
    assert suite.pass_hat_k["2"] == 1.0
