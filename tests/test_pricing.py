"""Prices by default (issue 16, part 2): the genai-prices table for profiles without ``price:``, cached prompt tokens
at the cached rate, reasoning tokens recorded, all through the real openai client against the scripted server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from autogen_core.models import CreateResult, UserMessage

from huddle.config.settings import ModelProfile, Price
from huddle.models.factory import build_client
from huddle.models.pricing import Priced, price_call
from huddle.testing import Reply, Rule, ScriptedServer
from huddle.tracing import read_run, trace_run
from huddle.tracing.runlog import RunFolder
from huddle.usage import UsageLedger, UsageRecord, usage_scope
from huddle.usage.budget import Budget, BudgetExhausted, Governor, Limit

# gpt-4o-mini in the table: $0.15 in, $0.075 cached in, $0.60 out per million tokens.
CACHED_REPLY = Reply(content="Cached, mostly.", usage=(1000, 200), cached_tokens=600, reasoning_tokens=50)
COST = (400 * 0.15 + 600 * 0.075 + 200 * 0.6) / 1e6
SAVED = 600 * (0.15 - 0.075) / 1e6


def mini(server: ScriptedServer, **fields: object) -> ModelProfile:
    return ModelProfile.model_validate({"name": "mini", "model": "gpt-4o-mini", "base_url": server.base_url, **fields})


async def one_call(profile: ModelProfile, *, stream: bool = False) -> UsageRecord:
    ledger = UsageLedger()
    client = build_client(profile, ledger, agent="asker")
    try:
        messages = [UserMessage(content="How much is this?", source="user")]
        if stream:
            items = [item async for item in client.create_stream(messages)]
            assert isinstance(items[-1], CreateResult)
        else:
            await client.create(messages)
    finally:
        await client.close()
    (record,) = ledger.records()
    return record


async def test_a_reply_reporting_cached_tokens_is_priced_at_the_table_cached_rate() -> None:
    with ScriptedServer([Rule(reply=CACHED_REPLY)]) as server:
        record = await one_call(mini(server))
    assert (record.prompt_tokens, record.cached_tokens, record.completion_tokens) == (1000, 600, 200)
    assert record.reasoning_tokens == 50  # recorded, and billed inside the 200 completion tokens (not twice)
    assert (record.cost_usd, record.saved_usd, record.price_source) == (COST, SAVED, "table")


async def test_a_streamed_call_reads_the_cached_tokens_of_its_usage_chunk() -> None:
    with ScriptedServer([Rule(reply=CACHED_REPLY)]) as server:
        record = await one_call(mini(server), stream=True)
        assert server.chat_requests[0].stream and server.chat_requests[0].cached_tokens == 600
    assert (record.streamed, record.cached_tokens, record.reasoning_tokens) == (True, 600, 50)
    assert (record.cost_usd, record.saved_usd) == (COST, SAVED)


async def test_an_explicit_price_wins_over_the_table() -> None:
    price = {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "cached_input_per_mtok": 0.5}
    with ScriptedServer([Rule(reply=CACHED_REPLY)]) as server:
        record = await one_call(mini(server, price=price))
    assert (record.cost_usd, record.saved_usd, record.price_source) == (
        (400 * 1.0 + 600 * 0.5 + 200 * 2.0) / 1e6,
        600 * (1.0 - 0.5) / 1e6,
        "profile",
    )


def test_a_price_without_a_cached_rate_bills_cached_tokens_at_the_input_rate() -> None:
    profile = ModelProfile(name="p", model="gpt-4o-mini", price=Price(input_per_mtok=1.0, output_per_mtok=2.0))
    assert price_call(profile, 1000, 200, cached=600) == Priced((1000 * 1.0 + 200 * 2.0) / 1e6, 0.0, "profile")


async def test_a_model_the_table_does_not_know_costs_zero_marked_unknown_never_an_error() -> None:
    with ScriptedServer([Rule(reply=CACHED_REPLY)]) as server:
        record = await one_call(mini(server, model="house-model-7"))
    assert (record.cost_usd, record.saved_usd, record.price_source, record.cached_tokens) == (0, 0, "unknown", 600)


def test_the_embedded_model_is_free() -> None:
    assert price_call(ModelProfile(name="local", provider="local"), 10**6, 10**6, cached=10) == Priced(0, 0, "free")


async def test_the_budget_estimate_uses_the_table_price() -> None:
    """A profile without price: was estimated at $0, so a dollar budget let every call through."""
    profile = ModelProfile(name="mini", model="gpt-4o-mini", base_url="http://127.0.0.1:9/v1", max_tokens=1000)
    ledger = UsageLedger()
    governor = Governor(Budget(run=Limit(max_usd=0.0001)), ledger)  # 1,000 completion tokens cost $0.0006
    client = build_client(profile, ledger, agent="asker", governor=governor)
    try:
        with pytest.raises(BudgetExhausted), usage_scope(run_id="r"):
            await client.create([UserMessage(content="hello", source="user")])
    finally:
        await client.close()
    assert ledger.records() == []  # refused before it was sent


def test_a_prompt_cache_server_reports_the_shared_prefix_in_128_token_steps() -> None:
    static = "You are a careful assistant. " * 300  # ~1,800 tokens of system prompt, the same every turn
    with ScriptedServer(prompt_cache=True) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
        first = [{"role": "system", "content": static}, {"role": "user", "content": "one"}]
        second = [*first, {"role": "assistant", "content": "OK"}, {"role": "user", "content": "two"}]
        short = [{"role": "user", "content": "hi"}]
        for messages in (first, second, short, short):
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
        cold, warm, tiny, tiny_again = server.chat_requests
    assert cold.cached_tokens == 0
    assert warm.cached_tokens is not None and warm.cached_tokens >= 1024 and warm.cached_tokens % 128 == 0
    assert warm.usage is not None and warm.cached_tokens <= warm.usage[0]
    assert (tiny.cached_tokens, tiny_again.cached_tokens) == (0, 0)  # under 1,024 shared tokens: never cached


def huddle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huddle", *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )


def test_huddle_usage_shows_the_table_cost_and_what_caching_saved(tmp_path: Path) -> None:
    with ScriptedServer([Rule(reply=CACHED_REPLY)]) as server:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: gpt-4o-mini, base_url: '{server.base_url}'}}\n"
            f"  house: {{model: house-model-7, base_url: '{server.base_url}'}}\n"
        )
        assert huddle("ask", "How much is this?").returncode == 0
        assert huddle("--model", "house", "ask", "And this?").returncode == 0
    report = json.loads(huddle("usage", "--json").stdout)
    mini_model, house = report["by_model"]["gpt-4o-mini"], report["by_model"]["house-model-7"]
    assert (mini_model["cost_usd"], mini_model["saved_usd"], mini_model["cached_tokens"]) == (COST, SAVED, 600)
    assert (house["cost_usd"], house["unpriced_calls"]) == (0, 1)
    table = huddle("usage").stdout
    assert f"{COST:.6f}" in table and f"{SAVED:.6f}" in table and "0.000000*" in table
    assert "* price unknown for 1 call(s) of house-model-7" in table
    assert "prompt caching: 60% of prompt tokens read from the provider's cache" in table
    models = {row["name"]: row for row in json.loads(huddle("models", "--json").stdout)}
    assert (models["default"]["price_source"], models["default"]["cached_input_per_mtok"]) == ("table", 0.075)
    assert models["house"]["price_source"] == "unknown" and models["house"]["input_per_mtok"] is None
    (house_line,) = [line for line in huddle("models").stdout.splitlines() if " house " in line]
    assert "?" in house_line and "unknown" in house_line


async def test_the_model_span_carries_cached_and_reasoning_tokens_and_the_provider(tmp_path: Path) -> None:
    with ScriptedServer([Rule(reply=CACHED_REPLY)]) as server, trace_run(RunFolder(tmp_path), "r1"):
        await one_call(mini(server))
    (model,) = [s for s in read_run(tmp_path, "r1") if s["kind"] == "model"]
    attributes = model["attributes"]
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 600
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == 50
    assert attributes["gen_ai.provider.name"] == "openai" and attributes["gen_ai.usage.input_tokens"] == 1000
