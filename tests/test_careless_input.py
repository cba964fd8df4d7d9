"""Careless input at the command line gets one clear ``error:`` line (or a safe reading), never a traceback or a bill.

Real subprocesses against the scripted server, as a user runs them; "nothing ran" means the server saw no request.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from huddle.errors import ExitCode
from huddle.testing import Reply, Rule, ScriptedServer
from huddle.usage import UsageLedger

KEY = "sk-test-0123456789abcdef"
TEAM = "team: {name: duo}\nagents:\n  - {role: planner}\n  - {role: responder}\n"
PLAN = json.dumps(
    {"goal": "tips", "steps": [{"id": 1, "assignee": "responder", "instruction": "Answer.", "depends_on": []}]}
)
# What a user gets when the shell hands over bytes that are not UTF-8 (a Latin-1 "café", a stray 0xFF 0xFE):
# Python's argv keeps them as lone surrogates, which cannot be encoded as UTF-8 later.
NOT_UTF8 = os.fsdecode(b"caf\xe9 \xff\xfe tips")


def huddle(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huddle", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENAI_API_KEY": KEY, **(env or {})},
    )


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single line on stderr, asserting there is exactly one and it is an ``error:`` line."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ScriptedServer]:
    """A project whose ``default`` profile is a model name tiktoken does not know, on the scripted server."""
    rules = [Rule(agent="planner", reply=Reply(content=PLAN)), Rule(reply=Reply(content="Be brief. Be kind."))]
    with ScriptedServer(rules=rules) as scripted:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: brand-new-model, base_url: '{scripted.base_url}'}}\n", encoding="utf-8"
        )
        (tmp_path / "team.yaml").write_text(TEAM, encoding="utf-8")
        yield scripted


@pytest.mark.parametrize(
    ("args", "what"), [(["run", ""], "task"), (["run", " \t "], "task"), (["ask", "  "], "prompt")]
)
def test_an_empty_task_or_prompt_is_refused_before_anything_runs(
    server: ScriptedServer, isolated_env: Path, args: list[str], what: str
) -> None:
    proc = huddle(*args)
    assert proc.returncode == 2
    assert f"error: the {what} is empty" in error_line(proc)
    assert server.requests == [] and not (isolated_env / "runs").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--max-usd", "0", "hi"],
        ["run", "--max-tokens", "0", "hi"],
        ["run", "--max-usd", "-1", "hi"],
        ["chat", "--max-tokens", "0"],
        ["chat", "--max-usd", "0"],
    ],
)
def test_a_zero_limit_is_refused_instead_of_meaning_no_limit(server: ScriptedServer, args: list[str]) -> None:
    proc = huddle(*args, stdin="hi\n")
    assert proc.returncode == 2
    line = error_line(proc)
    flag = next(arg for arg in args if arg.startswith("--"))
    assert f"{flag} must be a positive number" in line and f"omit {flag} for no limit" in line
    assert server.requests == []


def test_a_zero_budget_in_the_config_is_refused_with_its_line(server: ScriptedServer, tmp_path: Path) -> None:
    config = tmp_path / "huddle.yaml"
    config.write_text(config.read_text(encoding="utf-8") + "budget:\n  run:\n    max_usd: 0\n", encoding="utf-8")
    proc = huddle("run", "hi", "--team", "team.yaml")
    assert proc.returncode == 2
    assert "huddle.yaml:5: budget.run.max_usd: Input should be greater than 0" in error_line(proc)
    assert server.requests == []


def test_a_typo_of_a_profile_is_refused_with_a_suggestion(server: ScriptedServer) -> None:
    proc = huddle("-m", "locl", "ask", "hi")
    assert proc.returncode == 2
    line = error_line(proc)
    assert "unknown profile 'locl'; did you mean 'local'?" in line and "default:locl" in line
    assert server.requests == []


def test_a_deliberate_model_name_reaches_the_server(server: ScriptedServer) -> None:
    for choice, model in (("gpt-4o", "gpt-4o"), ("default:locl", "locl")):
        proc = huddle("-m", choice, "ask", "hi", "--no-stream")
        assert proc.returncode == 0, proc.stderr
        assert server.chat_requests[-1].model == model


def test_text_that_is_not_utf8_is_read_with_replacement(server: ScriptedServer, isolated_env: Path) -> None:
    for args in (["ask", NOT_UTF8], ["run", NOT_UTF8, "--team", "team.yaml", "--max-tokens", "100000"]):
        proc = huddle(*args)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert "Be brief. Be kind." in proc.stdout
    sent = [m["content"] for r in server.chat_requests for m in r.messages if m.get("role") == "user"]
    assert sent and all("caf\N{REPLACEMENT CHARACTER} \N{REPLACEMENT CHARACTER}" in text for text in sent), sent
    assert UsageLedger(isolated_env / "usage.sqlite").records()[0].agent == "ask"  # metered like any call
    runs = json.loads(huddle("runs", "--json").stdout)
    assert runs[0]["task"] == "caf\N{REPLACEMENT CHARACTER} \N{REPLACEMENT CHARACTER}\N{REPLACEMENT CHARACTER} tips"


def test_a_budgeted_run_on_an_unknown_model_shows_no_dependency_warnings(server: ScriptedServer) -> None:
    # autogen counts tokens for the budget with tiktoken and logs "Model … not found. Using cl100k_base encoding."
    proc = huddle("run", "Three tips for clear emails?", "--team", "team.yaml", "--max-usd", "1")
    assert proc.returncode == 0, proc.stderr
    assert "Be brief. Be kind." in proc.stdout
    assert server.chat_requests and server.chat_requests[-1].model == "brand-new-model"
    assert "cl100k_base" not in proc.stderr and "not found" not in proc.stderr, proc.stderr
    assert "answered" in proc.stderr  # the meter, huddle's own line, is still there


def test_huddles_own_warnings_stay_visible_and_python_w_shows_everything() -> None:
    script = (
        "import logging, warnings\n"
        "from huddle.cli.quiet import quiet_dependencies\n"
        "quiet_dependencies()\n"
        "logging.getLogger('autogen_core.trace').warning('autogen chatter')\n"
        "logging.getLogger('chromadb.telemetry.product.posthog').error('telemetry chatter')\n"
        "warnings.warn('a dependency warning')\n"
        "logging.getLogger('huddle.tools').warning('huddle refused a tool')\n"
    )
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert quiet.stderr == "huddle refused a tool\n"
    asked = subprocess.run([sys.executable, "-W", "default", "-c", script], capture_output=True, text=True, timeout=60)
    assert "autogen chatter" in asked.stderr and "a dependency warning" in asked.stderr


def test_docs_list_every_exit_code() -> None:
    """docs/cli.md's table is what users read; it must name every code huddle exits with."""
    docs = (Path(__file__).parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    section = docs.split("## Exit codes", 1)[1]
    listed = {int(code) for code in re.findall(r"^\| `?(\d+)`? \|", section, flags=re.MULTILINE)}
    assert listed == {0, 3} | {int(code) for code in ExitCode}
