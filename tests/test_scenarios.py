"""``huddle scenario run``: the example support suite offline, named failures, database checks that a good-sounding
reply cannot pass, clear errors for invalid files, pass^k, JUnit and a simulated customer."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import typer
from autogen_agentchat.messages import TextMessage
from click.testing import Result
from typer.testing import CliRunner

import huddle.evals.scenarios
from huddle.cli.app import CliState
from huddle.cli.scenario import scenario_app
from huddle.config.settings import load_settings
from huddle.evals.scenarios import pass_hat_k, tool_calls_in
from huddle.teams.results import record_of
from huddle.usage import UsageLedger

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "support"
SCENARIOS = sorted(EXAMPLES.glob("*.yaml"))


def root() -> typer.Typer:
    """The smallest root app that does what huddle's does for sub-commands: put a CliState in ctx.obj."""
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = CliState(config=None, model=None, data_dir=None)

    app.add_typer(scenario_app, name="scenario")
    return app


def scenario(*args: str) -> Result:
    return CliRunner().invoke(root(), ["scenario", *args])


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Result, dict[str, Any], Path]]:
    """One run of the whole example suite (the slow part), shared by the tests that read its result."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "HUDDLE_CONFIG", "HUDDLE_MODEL"):
            patch.delenv(name, raising=False)
        patch.setenv("HUDDLE_HOME", str(home))
        patch.chdir(home)
        result = scenario("run", *map(str, SCENARIOS), "--json", "--junit", str(home / "report.xml"), "-j", "2")
        yield result, json.loads(result.stdout or "{}"), home


def test_example_suite_passes_offline_and_reports_pass_hat_k(example_run: tuple[Result, dict[str, Any], Path]) -> None:
    result, suite, home = example_run
    assert result.exit_code == 0, result.output
    assert suite["passed"] and suite["pass_hat_k"] == {"1": 1.0}
    names = {s["name"] for s in suite["scenarios"]}
    assert (
        len(names) >= 8
        and {
            "refund-damaged-item",
            "cancel-before-shipping",
            "order-status",
            "refund-outside-window",
            "escalate-to-human",
            "clarify-order-number",
            "remembered-order-number",
            "out-of-scope",
        }
        <= names
    )
    report = ElementTree.parse(home / "report.xml").getroot()
    assert len(report.findall(".//testcase")) == len(names) and not report.findall(".//failure")


def test_clear_intents_use_no_model_tokens_in_the_ledger(example_run: tuple[Result, dict[str, Any], Path]) -> None:
    _, suite, home = example_run
    trials = {s["name"]: t for s in suite["scenarios"] for t in s["trials"]}
    intents = [(name, i["decided_by"], i["model_calls"]) for name, t in trials.items() for i in t["intents"]]
    # The router's examples never saw the suite's messages: all but one are clear; the tax question's nearest
    # examples are out of scope but not by the margin, so the model decides it, in one metered call.
    assert [i for i in intents if i[1] not in ("embedding", "context")] == [("out-of-scope", "model", 1)]
    assert all(calls == 0 for _, decided_by, calls in intents if decided_by != "model")
    ledger = UsageLedger(load_settings(data_dir=home).ledger_path)
    try:
        by_agent = ledger.by("agent")
        per_trial = {name: ledger.by("agent", session_id=t["session_id"]) for name, t in trials.items()}
    finally:
        ledger.close()
    assert set(by_agent) == {"responder", "intent"} and by_agent["intent"].calls == 1, by_agent
    assert set(per_trial.pop("out-of-scope")) == {"responder", "intent"}
    assert all(set(agents) == {"responder"} for agents in per_trial.values())  # no manager or tool-agent calls


def test_the_trial_records_tools_intents_and_database_checks(example_run: tuple[Result, dict[str, Any], Path]) -> None:
    _, suite, _ = example_run
    refund = next(s for s in suite["scenarios"] if s["name"] == "refund-damaged-item")["trials"][0]
    assert [(c["tool"], c["args"]["order_id"], c["ok"]) for c in refund["tool_calls"]] == [
        ("lookup_order", "1042", True),
        ("issue_refund", "1042", True),
    ]
    assert [i["intent"] for i in refund["intents"]] == ["refund"]  # the "yes" answers the waiting call: no routing
    assert [(a["tool"], a["args"]["order_id"], a["turn"], a["decision"]) for a in refund["approvals"]] == [
        ("issue_refund", "1042", 1, "approve")
    ]
    assert refund["replies"][0].startswith("Shall I refund order 1042")
    checks = {c["name"]: c["passed"] for c in refund["checks"]}
    assert checks["database SELECT status FROM orders WHERE id = '1042'"] is True
    # memory, intent, orders (the refund waits), then on the "yes" the refund runs and only the responder speaks
    assert refund["customer_turns"] == 2 and refund["turns"] == 4 and refund["prompt_tokens"] > 0
    refused = next(s for s in suite["scenarios"] if s["name"] == "refund-outside-window")["trials"][0]
    assert ("issue_refund", False) in [(c["tool"], c["ok"]) for c in refused["tool_calls"]]


def copy_examples(tmp_path: Path) -> Path:
    folder = tmp_path / "support"
    shutil.copytree(EXAMPLES, folder)
    return folder


def test_a_broken_expectation_fails_naming_it_with_exit_1(tmp_path: Path) -> None:
    folder = copy_examples(tmp_path)
    broken = folder / "refund-damaged-item.yaml"
    broken.write_text(broken.read_text().replace('[["refunded"]]', '[["cancelled"]]'))

    result = scenario("run", str(broken))

    assert result.exit_code == 1
    assert (
        "refund-damaged-item #1 failed: database SELECT status FROM orders WHERE id = '1042': expected "
        "[['cancelled']], got [['refunded']]"
    ) in result.stdout
    assert "pass^1 0.00" in result.stdout


def test_a_reply_that_sounds_right_fails_without_the_database_state(tmp_path: Path) -> None:
    liar = "rules: [{agent: responder, reply: 'Done: your refund has been issued.'}]\n"
    (tmp_path / "liar.yaml").write_text(liar)
    (tmp_path / "scenario.yaml").write_text(
        f"""name: refund-without-confirmation
model: liar.yaml
database: {EXAMPLES / "fixtures" / "orders.sql"}
user: ["Hi, order 1042 arrived broken. I want my money back.", {{deny: issue_refund}}]
expect:
  reply_contains: ["refund has been issued"]
  database: {{"SELECT status FROM orders WHERE id = '1042'": [["refunded"]]}}
"""
    )
    suite = huddle.evals.scenarios.run([tmp_path / "scenario.yaml"])
    trial = suite.scenarios[0].trials[0]
    assert not suite.passed and trial.status == "fail"
    assert trial.failures == [
        "database SELECT status FROM orders WHERE id = '1042': expected [['refunded']], got [['delivered']]"
    ]
    assert [c.passed for c in trial.checks if c.name.startswith("reply_contains")] == [True]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "name: x\nuser: [hi]\nexpect:\n  tools_called:\n    - {name: lookup_order, arg: {order_id: '1'}}\n",
            "bad.yaml:5: expect.tools_called.0.arg: unknown field",
        ),
        ("name: x\nknowledge: [missing.md]\nuser: [hi]\n", "bad.yaml:2: knowledge.0: Value error, no such file"),
        ("name: x\nuser: [hi]\nexpect: {max_cost_usd: -1}\n", "bad.yaml:3: expect.max_cost_usd: Input should be"),
        ("name: x\nexpect: {}\n", "bad.yaml:1: (top level): Value error, give exactly one of `user`"),
    ],
)
def test_an_invalid_scenario_is_one_clear_error_with_exit_2(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(body)
    result = scenario("run", str(tmp_path / "bad.yaml"))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_pass_hat_k_is_the_mean_of_c_choose_k_over_n_choose_k() -> None:
    assert pass_hat_k([(3, 4), (4, 4)], 1) == pytest.approx((3 / 4 + 1) / 2)
    assert pass_hat_k([(3, 4), (4, 4)], 2) == pytest.approx((3 / 6 + 1) / 2)
    assert pass_hat_k([(3, 4), (4, 4)], 4) == pytest.approx(0.5)
    assert pass_hat_k([(0, 3)], 1) == 0.0


def test_tool_calls_are_read_from_the_tool_agents_result_lines() -> None:
    message = record_of(
        TextMessage(
            source="orders",
            content=(
                'Step 1: lookup_order(order_id=\'1042\') -> {"note": "f(x) -> y"}\n'
                "Step 2: issue_refund(order_id='1017', reason='it) -> broke') -> ERROR {\"error\": \"exception\"}\n"
                "Request: escalate_to_human(reason='x', order_id=None, tags=['a', 1]) -> {}"
            ),
            metadata={"kind": "tool_result"},
        )
    )
    calls = [(c.tool, c.args, c.ok) for c in tool_calls_in(message, turn=1)]
    assert calls == [
        ("lookup_order", {"order_id": "1042"}, True),
        ("issue_refund", {"order_id": "1017", "reason": "it) -> broke"}, False),
        ("escalate_to_human", {"reason": "x", "order_id": None, "tags": ["a", 1]}, True),
    ]
    assert tool_calls_in(record_of(TextMessage(source="responder", content="Step 1: x() -> y")), turn=1) == []


def test_a_simulated_customer_talks_until_it_says_the_stop_token(tmp_path: Path) -> None:
    (tmp_path / "model.yaml").write_text(
        """rules:
  - {agent: customer, last: 'How can I help', reply: "Where is my order 1033?"}
  - {agent: customer, reply: "###STOP###"}
  - {agent: responder, last: '"status": "shipped"', reply: "It has shipped."}
"""
    )
    (tmp_path / "simulated.yaml").write_text(
        f"""name: simulated-status
model: model.yaml
database: {EXAMPLES / "fixtures" / "orders.sql"}
simulator: {{instruction: "You are Dana; you want to know where order 1033 is."}}
expect:
  intent: order_status
  tools_called: [{{name: lookup_order, args: {{order_id: 1033}}}}]
  reply_contains: [shipped]
"""
    )
    suite = huddle.evals.scenarios.run([tmp_path / "simulated.yaml"], trials=2)
    assert suite.passed and suite.pass_hat_k == {"1": 1.0, "2": 1.0}
    trial = suite.scenarios[0].trials[0]
    assert trial.customer == ["Where is my order 1033?"] and trial.replies == ["It has shipped."]
    assert trial.usage_by_agent["customer"].calls == 2  # the message, then the stop token
