"""Budgets steer execution: economise past the soft threshold, stop gracefully at the hard limit, cache repeats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from autogen_core.models import SystemMessage, UserMessage

from huddle.config.settings import Settings, load_settings
from huddle.models.factory import build_client
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.spec import TeamSpec
from huddle.testing import Reply, Rule, ScriptedServer
from huddle.usage import UsageLedger, usage_scope
from huddle.usage.budget import Budget, Governor, Limit

CALL_USAGE = (200, 50)  # every scripted reply reports this usage
PRICE = {"input_per_mtok": 2.0, "output_per_mtok": 8.0}  # so each call costs $0.0008
CALL_USD = (200 * 2.0 + 50 * 8.0) / 1e6


def config(server: ScriptedServer, tmp_path: Path, extra: str = "") -> Settings:
    (tmp_path / "huddle.yaml").write_text(
        f"""
models:
  default: {{model: big, base_url: "{server.base_url}", max_tokens: 50, price: {json.dumps(PRICE)}}}
  cheap: {{model: small, base_url: "{server.base_url}", max_tokens: 50,
          price: {{input_per_mtok: 0.1, output_per_mtok: 0.4}}}}
{extra}
"""
    )
    return load_settings()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(fallback=Reply(content="ok", usage=CALL_USAGE)) as running:
        yield running


def plan_without_args(n: int) -> str:
    """n tool steps, each after the one before, whose arguments the executor must ask its model for."""
    steps = [
        {
            "id": i,
            "assignee": "tool_executor",
            "instruction": f"compute part {i}",
            "tool": "calculator",
            "args": None,
            "depends_on": [i - 1] if i > 1 else [],
        }
        for i in range(1, n + 1)
    ]
    return json.dumps({"goal": "compute", "steps": steps, "done": False})


TEAM = TeamSpec.model_validate(
    {
        "team": {"name": "t", "max_turns": 12, "plan": "always"},
        "agents": [
            {"role": "planner", "optional": True},
            {"role": "tool_executor", "tools": ["calculator"]},
            {"role": "responder"},
        ],
    }
)


async def test_hard_budget_stops_gracefully_with_a_partial_answer(server: ScriptedServer, tmp_path: Path) -> None:
    settings = config(server, tmp_path, "budget: {run: {max_usd: 0.002}}")
    server.add_rule(Rule(agent="planner", reply=Reply(content=plan_without_args(3), usage=CALL_USAGE)))
    server.add_rule(
        Rule(agent="tool_executor", reply=Reply(tool_calls=[], content="I would compute it", usage=CALL_USAGE))
    )
    server.add_rule(Rule(agent="responder", reply=Reply(content="Partial: budget ran out.", usage=CALL_USAGE)))
    team = GroupChatTeam(TEAM, settings)
    result = await team.run("compute three things")
    await team.close()

    assert result.stop_reason.startswith("budget:")
    assert result.answer == "Partial: budget ran out."
    assert "budget ran out" in str(server.chat_requests[-1].body)  # the responder was told to say so
    assert result.usage.cost_usd <= 0.002 + CALL_USD + 1e-12
    assert result.budget is not None
    actions = [d["action"] for d in result.budget["decisions"]]
    assert "stop" in actions and "skip" in actions and actions.index("skip") < actions.index("stop")
    executor = [m.content for m in result.messages if m.source == "tool_executor"]
    assert "would exceed the run limit $0.002" in executor[-1]  # the refused step says why, in the conversation
    assert [d["action"] for d in team.ledger.budget_decisions(result.run_id)] == actions


async def test_no_budget_left_even_for_the_answer_gives_a_template(server: ScriptedServer, tmp_path: Path) -> None:
    settings = config(server, tmp_path, "budget: {run: {max_tokens: 400}}")
    # The planner's call is admitted on its estimate, then reports more than the whole budget.
    server.add_rule(Rule(agent="planner", reply=Reply(content=plan_without_args(1), usage=(400, 50))))
    team = GroupChatTeam(TEAM, settings)
    result = await team.run("compute")
    await team.close()
    assert result.answer.startswith("I had to stop before finishing: budget")
    assert [r.agent for r in server.chat_requests] == ["planner"]  # nothing after the limit was reached
    assert result.usage.total_tokens == 450  # one call's overshoot at most
    assert result.stop_reason.startswith("budget exhausted: run limit 400 tokens reached")


async def test_trim_and_downgrade_happen_before_stopping(server: ScriptedServer, tmp_path: Path) -> None:
    settings = config(server, tmp_path)
    settings.models["default"].fallback = "cheap"
    ledger = UsageLedger()
    governor = Governor(Budget(run=Limit(max_usd=0.004)), ledger)
    client = build_client(
        settings.profiles["default"], ledger, agent="writer", governor=governor, profiles=settings.profiles
    )
    history = [SystemMessage(content="be brief")] + [
        UserMessage(content=f"message {i} " + "words " * 300, source="user") for i in range(8)
    ]
    with usage_scope(run_id="r"):
        await client.create(history[:2])  # small and under the soft threshold: runs as is on the big model
        await client.create(history)  # large: trimmed, still too dear, so downgraded
    assert [d.action for d in governor.decisions] == ["trim", "downgrade"]
    sent = server.chat_requests[-1]
    assert sent.model == "small" and len(sent.messages) == 4  # system, first user message, the last two
    assert [(r.profile, r.model) for r in ledger.records()] == [("default", "big"), ("cheap", "small")]


async def test_manager_selection_calls_count_against_the_budget(server: ScriptedServer, tmp_path: Path) -> None:
    settings = config(server, tmp_path, "budget: {run: {max_usd: 1.0}}")
    server.add_rule(Rule(agent="manager", reply=Reply(content="responder", usage=CALL_USAGE)))
    spec = TeamSpec.model_validate(
        {"team": {"name": "t"}, "agents": [{"role": "tool_executor", "tools": ["calculator"]}, {"role": "responder"}]}
    )
    team = GroupChatTeam(spec, settings)
    result = await team.run("hi")
    await team.close()
    assert result.usage.by_agent["manager"].calls == 1
    assert result.budget is not None
    spent = result.budget["spent_run"]
    assert isinstance(spent, dict) and spent["calls"] == 2 and spent["cost_usd"] == pytest.approx(2 * CALL_USD)


async def test_repeated_run_with_cache_makes_no_uncached_calls(server: ScriptedServer, tmp_path: Path) -> None:
    settings = config(server, tmp_path, "cache: true")
    plan = {
        "goal": "g",
        "done": False,
        "steps": [
            {
                "id": 1,
                "assignee": "tool_executor",
                "instruction": "x",
                "tool": "calculator",
                "args": json.dumps({"expression": "6*7"}),
                "depends_on": [],
            }
        ],
    }
    server.add_rule(Rule(agent="planner", reply=Reply(content=json.dumps(plan), usage=CALL_USAGE)))
    server.add_rule(Rule(agent="responder", reply=Reply(content="42", usage=CALL_USAGE)))
    results = []
    for _ in range(2):
        team = GroupChatTeam(TEAM, settings)
        results.append(await team.run("what is 6*7"))
        await team.close()
    first, second = results
    assert len(server.chat_requests) == 2  # only the first run reached the server
    assert second.answer == first.answer == "42"
    assert second.usage.calls == 2 and second.usage.cached_calls == 2 and second.usage.cost_usd == 0
    assert first.usage.cost_usd == pytest.approx(2 * CALL_USD)
