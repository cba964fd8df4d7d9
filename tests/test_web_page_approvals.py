"""The web page's approvals, driven in Chromium against a real server: a team whose write tool is under ``approval:
always`` pauses, the page shows the pending call as a card (agent, tool, arguments, why), and its Approve, Deny and
Edit buttons resume the run in the same conversation. The tool's side effect is counted in a file, so a button that
does nothing, or sends the wrong decision, fails the test; so does a tool that runs twice.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from huddle.serve import app
from huddle.testing import Reply, Rule, ScriptedServer
from tests.serving import scripted_settings, serving
from tests.test_approvals import TOOLS, count, echo, plan, team_yaml
from tests.test_web_page import ask, browser, open_page, shots

__all__ = ["browser", "shots"]  # the fixtures the tests below take, shared with the page's other tests


@pytest.fixture
def planned() -> list[str]:
    """What the scripted planner plans: one bump, unless a test puts another plan here before it asks."""
    return [plan()]


@pytest.fixture
def base_url(tmp_path: Path, planned: list[str]) -> Iterator[str]:
    """A served team ``gate``: planner → tool executor with ``bump`` under ``approval: always`` → responder (who
    echoes what it was sent, so the page shows whether the tool's result or the denial reached it)."""
    (tmp_path / "approval_tools.py").write_text(TOOLS)
    (tmp_path / "gate.yaml").write_text(team_yaml())
    sys.path.insert(0, str(tmp_path))
    rules = [
        Rule(agent="planner", reply=lambda _: Reply(content=planned[0])),
        Rule(agent="responder", reply=echo),
    ]
    try:
        with (
            ScriptedServer(rules=rules) as model,
            serving(app(scripted_settings(tmp_path, model), teams=[tmp_path / "gate.yaml"])) as url,
        ):
            yield url
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("approval_tools", None)


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    with open_page(browser, base_url) as page:
        page.goto(base_url)
        expect(page.get_by_label("Team")).to_have_value("gate")
        yield page


def paused_card(page: Page) -> Locator:
    """Ask for the write; the run pauses with its call shown as a card, and nothing has run yet."""
    ask(page, "Bump the counter")
    card = page.locator("#transcript .approval-card")
    expect(card).to_have_count(1)
    expect(card.locator(".approval-tool")).to_have_text("bump")
    expect(card.locator(".approval-agent")).to_have_text("tool_executor")
    expect(card.locator(".approval-args")).to_contain_text('"note": "hello"')
    expect(card.locator(".approval-why")).not_to_be_empty()
    expect(page.locator("#transcript .tool-call")).to_have_count(0)  # the card stands for the waiting call
    expect(page.locator("#transcript .run-footer")).to_contain_text("awaiting_approval")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    assert count() == 0
    return card.first  # this card, even once a later pause adds another below it


def answer(page: Page) -> Locator:
    return page.locator("#transcript .message", has_text="Answer from:").last.locator(".text")


def test_approve_runs_the_tool_once_and_the_run_goes_on_on_screen(page: Page, shots: Path) -> None:
    card = paused_card(page)
    page.screenshot(path=str(shots / "serve-approval.png"))

    card.get_by_role("button", name="Approve").click()
    expect(answer(page)).to_contain_text("counter is 1 (hello)")
    expect(page.locator("#transcript .tool-result", has_text="counter is 1 (hello)").first).to_be_visible()
    expect(card.locator(".approval-outcome")).to_have_text("Approved")
    expect(card.get_by_role("button", name="Approve")).to_be_hidden()
    expect(page.locator("#transcript .run-footer")).to_have_count(2)
    expect(page.locator("#status")).to_have_text("")
    assert count() == 1


def test_deny_asks_for_a_reason_that_reaches_the_team_and_the_tool_never_runs(page: Page) -> None:
    card = paused_card(page)
    card.get_by_role("button", name="Deny").click()
    card.get_by_label("Reason for denying bump").fill("not on a Sunday")
    card.get_by_role("button", name="Send denial").click()
    expect(answer(page)).to_contain_text("not on a Sunday")
    expect(card.locator(".approval-outcome")).to_have_text("Denied: not on a Sunday")
    expect(page.locator("#transcript .run-footer")).to_have_count(2)
    assert count() == 0


def test_edit_checks_the_json_shows_the_servers_refusal_and_runs_the_edited_call(page: Page) -> None:
    card = paused_card(page)
    card.get_by_role("button", name="Edit").click()
    box = card.get_by_label("Arguments for bump")
    expect(box).to_have_value('{\n  "note": "hello"\n}')

    box.fill('{"note": ')  # not JSON: refused on the page, nothing sent
    card.get_by_role("button", name="Run with these arguments").click()
    expect(card.locator(".approval-error")).to_contain_text("not valid JSON")
    expect(page.locator("#transcript .run-footer")).to_have_count(1)

    box.fill('{"nope": 1}')  # JSON, but not bump's arguments: the server refuses, the card says why and stays
    card.get_by_role("button", name="Run with these arguments").click()
    expect(card.locator(".approval-error")).to_contain_text("note")
    expect(card.get_by_role("button", name="Edit")).to_be_visible()
    assert count() == 0

    card.get_by_role("button", name="Edit").click()
    card.get_by_label("Arguments for bump").fill('{"note": "edited"}')
    card.get_by_role("button", name="Run with these arguments").click()
    expect(answer(page)).to_contain_text("counter is 1 (edited)")
    assert count() == 1


def test_a_reopened_session_shows_its_paused_call_and_approves_it(page: Page) -> None:
    paused_card(page)
    page.reload()
    expect(page.locator("#transcript .approval-card")).to_have_count(0)
    page.locator("#sessions .session-open", has_text="gate").click()
    card = page.locator("#transcript .approval-card")
    expect(card).to_have_count(1)
    expect(card.locator(".approval-tool")).to_have_text("bump")
    expect(card.locator(".approval-args")).to_contain_text('"note": "hello"')

    card.get_by_role("button", name="Approve").click()
    expect(answer(page)).to_contain_text("counter is 1 (hello)")
    assert count() == 1
    expect(page.locator("#sessions .session-meta")).to_contain_text("1 turn")


def test_two_waiting_calls_are_decided_one_by_one_and_resumed_once(page: Page, planned: list[str]) -> None:
    steps = [
        {
            "id": n,
            "assignee": "tool_executor",
            "instruction": "bump",
            "tool": "bump",
            "args": json.dumps({"note": note}),
        }
        for n, note in ((1, "first"), (2, "second"))
    ]
    planned[0] = json.dumps({"goal": "bump twice", "steps": steps, "done": False})
    resumes: list[str] = []
    page.on(
        "request", lambda r: resumes.append(r.url) if r.method == "POST" and '"resume"' in (r.post_data or "") else None
    )
    ask(page, "Bump it twice")
    cards = page.locator("#transcript .approval-card")
    expect(cards).to_have_count(2)
    expect(cards.locator(".approval-args")).to_contain_text(['"note": "first"', '"note": "second"'])

    cards.first.get_by_role("button", name="Approve").click()
    expect(cards.first.locator(".approval-outcome")).to_have_text("Approved")
    expect(cards.nth(1).get_by_role("button", name="Deny")).to_be_visible()  # nothing sent until both are decided
    assert resumes == [] and count() == 0

    cards.nth(1).get_by_role("button", name="Deny").click()
    cards.nth(1).get_by_label("Reason for denying bump").fill("once is enough")
    cards.nth(1).get_by_label("Reason for denying bump").press("Enter")
    expect(answer(page)).to_contain_text("counter is 1 (first)")
    expect(answer(page)).to_contain_text("once is enough")
    assert len(resumes) == 1 and count() == 1


def test_a_new_message_instead_of_a_decision_retires_the_card(page: Page) -> None:
    first = paused_card(page)
    ask(page, "Bump the counter after all")
    expect(first.locator(".approval-outcome")).to_have_text("Not run: a new message was sent instead")
    expect(first.get_by_role("button", name="Approve")).to_be_hidden()
    cards = page.locator("#transcript .approval-card")
    expect(cards).to_have_count(2)
    cards.last.get_by_role("button", name="Approve").click()
    expect(answer(page)).to_contain_text("counter is 1 (hello)")
    assert count() == 1
