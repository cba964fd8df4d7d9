"""The command line as a user runs it: real subprocesses, real HTTP to the scripted server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from huddle.testing import Reply, Rule, ScriptedServer
from huddle.usage import UsageLedger

KEY = "sk-live-looking-key-0123456789"


def huddle(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huddle", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_help_and_version() -> None:
    proc = huddle("--help")
    assert proc.returncode == 0
    assert "models" in proc.stdout and "ask" in proc.stdout
    assert huddle("--version").stdout.startswith("huddle ")


def test_models_lists_profiles_with_prices_and_never_the_key(tmp_path: Path) -> None:
    (tmp_path / "huddle.yaml").write_text(
        "model: cheap\nmodels:\n  cheap: {model: m-small, base_url: 'http://127.0.0.1:1/v1', fallback: local,"
        " price: {input_per_mtok: 0.1, output_per_mtok: 0.4}}\n"
    )
    proc = huddle("models", "--json", env={"OPENAI_API_KEY": KEY})
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert set(rows) == {"cheap", "default", "local"}
    assert rows["cheap"]["active"] and rows["cheap"]["fallback"] == "local"
    assert (rows["cheap"]["input_per_mtok"], rows["cheap"]["output_per_mtok"]) == (0.1, 0.4)
    assert rows["default"]["api_key"] == "set" and rows["local"]["output_per_mtok"] == 0
    table = huddle("models", env={"OPENAI_API_KEY": KEY})
    assert "m-small" in table.stdout and "0.1 / 0.4" in table.stdout
    assert KEY not in proc.stdout + table.stdout


def test_ask_streams_from_a_server_and_records_its_usage(tmp_path: Path, isolated_env: Path) -> None:
    with ScriptedServer(rules=[Rule(reply=Reply(content="Be brief. Be kind. Be clear.", usage=(42, 9)))]) as server:
        (tmp_path / "huddle.yaml").write_text(f"models:\n  default: {{model: tiny, base_url: '{server.base_url}'}}\n")
        proc = huddle("ask", "Three tips for clear emails?", env={"OPENAI_API_KEY": KEY})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "Be brief. Be kind. Be clear."
        assert "42 prompt + 9 completion tokens (server)" in proc.stderr
        assert server.requests[-1].stream and server.requests[-1].body is not None
        assert server.requests[-1].body["messages"][-1]["content"] == "Three tips for clear emails?"

        as_json = json.loads(huddle("ask", "again", "--json", env={"OPENAI_API_KEY": KEY}).stdout)
        assert as_json["answer"] == "Be brief. Be kind. Be clear."
        assert (as_json["usage"]["prompt_tokens"], as_json["usage"]["completion_tokens"]) == (42, 9)
    ledger = UsageLedger(isolated_env / "usage.sqlite")
    assert [(r.agent, r.model, r.prompt_tokens, r.completion_tokens) for r in ledger.records()] == [
        ("ask", "tiny", 42, 9),
        ("ask", "tiny", 42, 9),
    ]


def test_ask_with_a_scripted_profile(tmp_path: Path) -> None:
    (tmp_path / "huddle.yaml").write_text("models:\n  canned: {provider: scripted, replies: ['Hello there.']}\n")
    proc = huddle("-m", "canned", "ask", "hi", "--no-stream")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Hello there."


def test_unreachable_server_is_one_line_without_traceback_or_key(tmp_path: Path) -> None:
    (tmp_path / "huddle.yaml").write_text(
        "models:\n  default: {base_url: 'http://127.0.0.1:9/v1', max_retries: 0, timeout_s: 5}\n"
    )
    proc = huddle("ask", "hello", env={"OPENAI_API_KEY": KEY})
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: profile 'default'"), proc.stderr
    assert "Connection" in lines[0] and KEY not in proc.stderr and "Traceback" not in proc.stderr


def test_missing_api_key_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "huddle.yaml").write_text("models:\n  default: {model: gpt-4o-mini}\n")
    proc = huddle("ask", "hello")
    assert proc.returncode == 2
    assert "OPENAI_API_KEY" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_flag_is_a_usage_error() -> None:
    proc = huddle("ask")
    assert proc.returncode == 2 and "Missing argument" in proc.stderr
