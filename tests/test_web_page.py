"""The web page at ``/``, driven in Chromium (Debian's, no browser download) against a real server and a scripted
team whose planner plans a calculator call: what a person sees is asserted as visible text, so a broken page fails.

The browser may reach nothing but the server under test: any other request fails the test (the page ships its
assets; no CDN, no network). With ``HUDDLE_SCREENSHOTS=1`` the screenshots are written to docs/img (the ones the docs
show); otherwise to the test's own folder, so a test run leaves the repository as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright

from huddle.config.settings import Settings, load_settings
from huddle.serve import app
from huddle.serve.keys import KeyAccess, KeyStore
from huddle.testing import Fault, Reply, Rule, ScriptedServer
from tests.plans import calculator_plan
from tests.serving import serving

CHROMIUM = "/usr/bin/chromium"
# A turn of the scripted team takes a few seconds on a busy CI machine; a broken page still fails, just later.
expect.set_options(timeout=30_000)
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
TEAM = """
team: {name: calc, max_turns: 12, plan: always}
agents:
  - {role: planner}
  - {role: tool_executor, tools: [calculator]}
  - {role: responder}
"""
# The responder's second answer: markup in a model's reply is text to show, never markup to run.
MARKUP_ANSWER = '<img src=x id=injected onerror="document.title=1">Still 391.'


@pytest.fixture
def model() -> Iterator[ScriptedServer]:
    with ScriptedServer(
        rules=[
            Rule(agent="planner", reply=Reply(content=calculator_plan())),
            Rule(agent="responder", reply=[Reply(content="17*23 is 391."), Reply(content=MARKUP_ANSWER)]),
        ]
    ) as server:
        yield server


@pytest.fixture
def settings(model: ScriptedServer, tmp_path: Path) -> Settings:
    return calc_settings(tmp_path, model)


def calc_settings(folder: Path, model: ScriptedServer, max_retries: int = 0) -> Settings:
    """Priced (so the meter's dollars move) and under a run budget (so the bar shows); the calc team beside it."""
    (folder / "huddle.yaml").write_text(
        f"models:\n  default: {{model: scripted, base_url: '{model.base_url}', max_retries: {max_retries},"
        " price: {input_per_mtok: 100.0, output_per_mtok: 200.0}}\n"
        f"data_dir: {folder / 'data'}\nbudget: {{run: {{max_usd: 1.0}}}}\n"
    )
    (folder / "calc.yaml").write_text(TEAM)
    return load_settings(folder / "huddle.yaml")


@pytest.fixture
def base_url(settings: Settings, tmp_path: Path) -> Iterator[str]:
    with serving(app(settings, teams=[tmp_path / "calc.yaml"])) as url:
        yield url


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return DOCS_IMG if os.environ.get("HUDDLE_SCREENSHOTS") == "1" else tmp_path


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    with open_page(browser, base_url) as page:
        yield page


@contextmanager
def open_page(browser: Browser, base_url: str) -> Iterator[Page]:
    """A tab that may reach only `base_url`, failing the test on a request elsewhere or a script error."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    elsewhere: list[str] = []

    def only_the_server(route: Route, request: Request) -> None:
        if request.url.startswith(base_url):
            route.continue_()
        else:
            elsewhere.append(request.url)
            route.abort()

    page.route("**/*", only_the_server)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    assert not elsewhere, f"the page reached outside the server: {elsewhere}"
    assert not errors, f"script errors on the page: {errors}"


def ask(page: Page, question: str) -> None:
    page.get_by_label("Message").fill(question)
    page.get_by_label("Message").press("Enter")


def test_a_question_shows_speakers_plan_tool_call_meter_and_trace(page: Page, base_url: str, shots: Path) -> None:
    page.goto(base_url)
    expect(page.get_by_label("Team")).to_have_value("calc")
    expect(page.locator("#meter-tokens")).to_have_text("0 tokens")
    expect(page.locator("#meter-cost")).to_have_text("$0.0000")

    ask(page, "What is 17*23?")
    transcript = page.locator("#transcript")
    expect(transcript.locator(".message.user .text")).to_have_text("What is 17*23?")
    expect(transcript.locator(".message:not(.user) > .speaker")).to_have_text(["planner", "responder"])
    expect(transcript.locator(".message", has_text="17*23 is 391.").locator(".speaker")).to_have_text("responder")
    tool = transcript.locator(".tool-call")
    expect(tool.locator(".speaker")).to_have_text("tool_executor")
    expect(tool.locator(".tool-name")).to_have_text("calculator")
    expect(tool.locator(".tool-args")).to_contain_text("17*23")
    expect(tool.locator(".tool-result")).to_contain_text("391")
    step = page.locator("#plan .step").first
    expect(step).to_contain_text("tool_executor")
    expect(step).to_contain_text("multiply")
    expect(step.locator(".step-status")).to_have_text("done")
    decisions = page.locator("#decisions .decision")
    expect(decisions.first.locator(".decision-speaker")).to_have_text("planner")
    expect(decisions.nth(1)).to_contain_text("tool_executor")
    expect(decisions.nth(1).locator(".decision-policy")).to_have_text("plan")
    expect(decisions.nth(1).locator(".decision-reason")).to_contain_text("step 1 is ready")
    expect(page.locator("#meter-tokens")).not_to_have_text("0 tokens")
    expect(page.locator("#meter-calls")).to_have_text("2 calls")
    expect(page.locator("#meter-cost")).not_to_have_text("$0.0000")
    expect(page.locator("#budget-label")).to_contain_text("of $1.0000")
    expect(page.locator("#status")).to_have_text("")
    page.screenshot(path=str(shots / "serve-chat.png"))

    page.locator(".trace-button").click()
    tree = page.locator("#trace")
    expect(tree.locator(".trace-name", has_text="invoke_agent responder")).to_be_visible()
    model_call = tree.locator(".trace-node.model").first
    expect(model_call.locator(".trace-latency").first).to_contain_text(" ms")
    expect(model_call.locator(".trace-tokens").first).not_to_have_text("0 tok")
    expect(model_call.locator(".trace-cost").first).not_to_have_text("$0.0000")
    expect(tree.locator(".trace-name", has_text="execute_tool calculator")).to_be_visible()
    page.screenshot(path=str(shots / "serve-trace.png"))


def test_a_reloaded_page_reopens_the_session_and_continues_it(page: Page, base_url: str, shots: Path) -> None:
    page.goto(base_url)
    ask(page, "What is 17*23?")
    expect(page.locator("#transcript .run-footer")).to_have_count(1)
    expect(page.locator("#sessions .session")).to_have_count(1)

    page.reload()
    expect(page.locator("#transcript .message")).to_have_count(0)
    page.locator("#sessions .session-open", has_text="calc").click()
    transcript = page.locator("#transcript")
    expect(transcript.locator(".message.user .text")).to_have_text("What is 17*23?")
    expect(transcript.locator(".message", has_text="17*23 is 391.").first).to_be_visible()
    expect(page.locator("#plan .step").first).to_contain_text("multiply")

    ask(page, "And again?")
    expect(transcript.locator(".run-footer")).to_have_count(2)
    expect(transcript.get_by_text(MARKUP_ANSWER)).to_be_visible()
    expect(page.locator("#sessions .session")).to_have_count(1)
    expect(page.locator("#sessions .session-meta")).to_contain_text("2 turns")
    page.screenshot(path=str(shots / "serve-session.png"))

    page.reload()  # the saved turns are drawn from the session store's copy: still text, not markup
    page.locator("#sessions .session-open").click()
    expect(transcript.locator(".run-footer")).to_have_count(2)
    expect(transcript.get_by_text(MARKUP_ANSWER)).to_be_visible()
    expect(page.locator("#injected")).to_have_count(0)
    assert page.title() == "huddle"

    sessions = httpx.get(f"{base_url}/api/sessions").json()
    assert [s["turns"] for s in (sessions if isinstance(sessions, list) else sessions["sessions"])] == [2]


def test_a_retried_answer_shows_only_its_last_try(browser: Browser, tmp_path: Path) -> None:
    rules = [
        Rule(agent="planner", reply=Reply(content=calculator_plan())),
        Rule(
            agent="responder", times=1, reply=Reply(content="The first try says this"), fault=Fault(kind="cut_stream")
        ),
        Rule(agent="responder", reply=Reply(content="17*23 is 391.")),
    ]
    with ScriptedServer(rules=rules) as model:
        settings = calc_settings(tmp_path, model, max_retries=2)
        with serving(app(settings, teams=[tmp_path / "calc.yaml"])) as url, open_page(browser, url) as page:
            page.goto(url)
            ask(page, "What is 17*23?")
            expect(page.locator("#transcript .run-footer")).to_have_count(1)
            answer = page.locator("#transcript .message", has_text="391").locator(".text")
            expect(answer).to_have_text("17*23 is 391.")
            expect(page.locator("#transcript")).not_to_contain_text("first try")


def test_a_run_that_fails_says_why_and_keeps_its_trace(browser: Browser, tmp_path: Path) -> None:
    with ScriptedServer(rules=[Rule(fault=Fault(kind="server_error"))]) as model:
        settings = calc_settings(tmp_path, model)
        with serving(app(settings, teams=[tmp_path / "calc.yaml"])) as url, open_page(browser, url) as page:
            page.goto(url)
            ask(page, "What is 17*23?")
            expect(page.locator("#status")).to_contain_text("run_failed: error")
            expect(page.locator("#status")).not_to_contain_text("Traceback")
            footer = page.locator("#transcript .run-footer")
            expect(footer).to_contain_text("no answer")
            footer.locator(".trace-button").click()
            expect(page.locator("#trace .trace-name").first).to_contain_text("run")
            expect(page.get_by_role("button", name="Send")).to_be_enabled()


def test_the_page_and_its_assets_are_served_with_a_strict_policy(base_url: str) -> None:
    page = httpx.get(base_url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = [(name, "javascript") for name in ("app.js", "agui.js", "dom.js", "trace.js")] + [("app.css", "text/css")]
    for asset, kind in assets:
        response = httpx.get(f"{base_url}/static/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert httpx.get(f"{base_url}/static/missing.js").status_code == 404


def test_a_server_with_keys_asks_for_one_and_keeps_it_in_the_tab(
    browser: Browser, settings: Settings, tmp_path: Path
) -> None:
    with KeyStore.of(settings) as store:
        key = store.add("web page")
    with (
        closing(KeyAccess.of(settings)) as access,
        serving(app(settings, teams=[tmp_path / "calc.yaml"], access=access)) as url,
        open_page(browser, url) as page,
    ):
        page.goto(url)
        expect(page.locator("#status")).to_contain_text("needs an API key")
        page.get_by_label("API key").fill("hud_000000000000_wrong")
        page.get_by_role("button", name="Use key").click()
        expect(page.locator("#status")).to_contain_text("is not valid")
        expect(page.get_by_label("API key")).to_be_visible()

        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Use key").click()
        expect(page.get_by_label("API key")).to_be_hidden()
        expect(page.get_by_label("Team")).to_have_value("calc")
        ask(page, "What is 17*23?")
        expect(page.locator("#transcript .message", has_text="17*23 is 391.")).to_be_visible()
        expect(page.locator("#sessions .session")).to_have_count(1)
        assert page.evaluate("sessionStorage.getItem('huddle.apiKey')") == key
        assert page.evaluate("localStorage.length") == 0
        assert key not in page.content()

        page.reload()  # the tab keeps the key: no prompt, the session is listed
        expect(page.locator("#sessions .session")).to_have_count(1)
        expect(page.get_by_label("API key")).to_be_hidden()
