"""Scenarios and approvals: a user turn approves or denies the calls a paused turn left waiting, expectations check
what was asked for approval, a customer's own "yes" is the approval in the support preset, and mistakes in the new
fields are one clear error naming the file and line (support preset, scripted model, real HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import huddle.evals.scenarios
from huddle.agents.approval import pending_call
from huddle.evals.approvals import waiting_text
from huddle.evals.results import TrialResult
from tests.test_scenarios import root

SHOP = Path(__file__).resolve().parent.parent / "examples" / "support"
REFUND = "Hi, order 1042 arrived broken. I want my money back."


def write(folder: Path, user: str, expect: str = "{}") -> Path:
    path = folder / "scenario.yaml"
    path.write_text(
        f"name: approvals\nmodel: {SHOP / 'models' / 'scripted.yaml'}\ndatabase: {SHOP / 'fixtures' / 'orders.sql'}\n"
        f"user: {user}\nexpect: {expect}\n"
    )
    return path


def trial(path: Path) -> TrialResult:
    return huddle.evals.scenarios.run([path]).scenarios[0].trials[0]


def test_an_approve_turn_runs_the_waiting_refund_once(tmp_path: Path) -> None:
    expect = (
        '{asked_approval: [{name: issue_refund, args: {order_id: "1042"}}], not_asked_approval: [lookup_order], '
        "tools_called: [{name: issue_refund, ok: true}], "
        """database: {"SELECT count(*) FROM refunds WHERE order_id = '1042'": [[1]]}}"""
    )
    result = trial(write(tmp_path, f'["{REFUND}", {{approve: issue_refund}}]', expect))
    assert result.status == "pass", result.failures or result.error
    assert [(a.tool, a.decision) for a in result.approvals] == [("issue_refund", "approve")]
    assert result.customer == [REFUND, "approve: issue_refund"]
    assert result.replies[1].startswith("Done: your refund has been issued")


def test_a_deny_turn_never_runs_the_call_and_its_reason_reaches_the_team(tmp_path: Path) -> None:
    expect = (
        "{asked_approval: [issue_refund], tools_not_called: [issue_refund], "
        """database: {"SELECT status FROM orders WHERE id = '1042'": [[delivered]]}, """
        """reply_contains: ["haven't changed anything"]}"""
    )
    user = f'["{REFUND}", {{deny: {{tool: issue_refund, reason: "the photos show no damage"}}}}]'
    result = trial(write(tmp_path, user, expect))
    assert result.status == "pass", result.failures or result.error
    assert [a.decision for a in result.approvals] == ["deny: the photos show no damage"]


def test_approval_expectations_fail_naming_what_was_asked(tmp_path: Path) -> None:
    expect = "{asked_approval: [{name: issue_refund, args: {order_id: '1017'}}], not_asked_approval: [issue_refund]}"
    result = trial(write(tmp_path, f'["{REFUND}", "yes"]', expect))
    assert result.status == "fail"
    assert result.failures == [
        "asked_approval[0] issue_refund: issue_refund(order_id='1017') was not asked for approval (asked: "
        "issue_refund(order_id='1042', reason='Hi, order 1042 arrived broken. I want my money back.') approve)",
        "not_asked_approval issue_refund: asked: issue_refund(order_id='1042', reason='Hi, order 1042 arrived "
        "broken. I want my money back.') approve",
    ]


def test_asked_approval_fails_when_nothing_waited(tmp_path: Path) -> None:
    result = trial(write(tmp_path, '["Where is my order 1033?"]', "{asked_approval: [issue_refund]}"))
    assert result.failures == [
        "asked_approval[0] issue_refund: issue_refund() was not asked for approval (asked: none)"
    ]


@pytest.mark.parametrize(
    ("user", "error"),
    [
        (
            '["Where is my order 1033?", {approve: issue_refund}]',
            "user turn 2 (approve: issue_refund): nothing waits for approval",
        ),
        (
            f'["{REFUND}", {{approve: cancel_order}}]',
            "user turn 2 (approve: cancel_order): no cancel_order call waits for approval (waiting: issue_refund)",
        ),
    ],
)
def test_a_decision_that_fits_no_waiting_call_is_the_trials_error(tmp_path: Path, user: str, error: str) -> None:
    result = trial(write(tmp_path, user))
    assert result.status == "error" and result.error == f"HuddleError: {error}"


def test_the_customers_plain_answer_is_the_decision_and_another_question_drops_the_wait(tmp_path: Path) -> None:
    """The support router reads "no, wait" as a denial; a question about another order is a new message."""
    declined = trial(write(tmp_path, f'["{REFUND}", "No, wait."]', "{tools_not_called: [issue_refund]}"))
    assert declined.status == "pass", declined.failures or declined.error
    assert [a.decision for a in declined.approvals] == ["deny: the customer declined: No, wait."]

    moved_on = trial(write(tmp_path, f'["{REFUND}", "Where is my order 1033?"]', "{tools_not_called: [issue_refund]}"))
    assert moved_on.status == "pass", moved_on.failures or moved_on.error
    assert [a.decision for a in moved_on.approvals] == [""]  # never decided
    assert moved_on.replies[1].startswith("Your order has shipped")


def test_without_a_member_that_asks_the_customer_the_waiting_calls_are_shown() -> None:
    pending = [pending_call("write_file", {"path": "notes.md"}, "writer", 1)]
    assert waiting_text(pending, None) == "Waiting for approval: write_file(path='notes.md')"


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ('["hi", {approve: issue_refund, deny: issue_refund}]', "scenario.yaml:4: user.1"),
        ('["hi", {approve: issue_refund, deny: issue_refund}]', "exactly one of `approve: TOOL`"),
        ('["hi", {approve: ""}]', "scenario.yaml:4: user.1"),
        ('["hi", {deny: {tool: issue_refund, why: x}}]', "scenario.yaml:4: user.1.approval.deny.why: unknown field"),
        ("[{approve: all}]", "scenario.yaml:4: user: Value error, the first turn must be a message"),
    ],
)
def test_check_names_the_file_and_line_of_a_bad_approval_turn(tmp_path: Path, user: str, message: str) -> None:
    path = write(tmp_path, user)
    result = CliRunner().invoke(root(), ["scenario", "check", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr


def test_check_refuses_an_unknown_field_in_an_approval_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, '["hi"]', "{asked_approval: [{name: issue_refund, ok: true}]}")
    result = CliRunner().invoke(root(), ["scenario", "check", str(path)])
    assert result.exit_code == 2
    assert "scenario.yaml:5: expect.asked_approval.0.ok: unknown field" in result.stderr


def test_an_approval_turn_covers_every_waiting_call_or_says_all() -> None:
    from huddle.errors import HuddleError
    from huddle.evals.approvals import decisions_for
    from huddle.evals.spec import ApprovalTurn

    pending = [
        pending_call("issue_refund", {"order_id": "1042", "reason": "broken"}, "orders", 2),
        pending_call("cancel_order", {"order_id": "1055"}, "orders", 3),
    ]
    with pytest.raises(HuddleError, match=r"user turn 3 \(approve: issue_refund\): decide every waiting call, or"):
        decisions_for(ApprovalTurn(approve="issue_refund"), pending, 2)
    approved = decisions_for(ApprovalTurn(approve="all"), pending, 2)
    assert [(call_id, d.action) for call_id, d in approved.items()] == [(p.id, "approve") for p in pending]
    denied = decisions_for(ApprovalTurn.model_validate({"deny": "all"}), pending, 2)
    assert {d.reason for d in denied.values()} == {"denied by the user"}
