"""A run that cannot produce an answer stops at once with a stop reason naming the cause, instead of looping."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from huddle.config.settings import Settings, load_settings
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.spec import TeamSpec
from huddle.testing import Reply, Rule, ScriptedServer

ALWAYS_PLAN = {
    "team": {"name": "assistant", "plan": "always"},
    "agents": [{"role": "planner"}, {"role": "tool_executor", "tools": ["calculator"]}, {"role": "responder"}],
}


def settings_for(base_url: str, tmp_path: Path, **profile: object) -> Settings:
    extra = "".join(f", {k}: {v}" for k, v in profile.items())
    (tmp_path / "huddle.yaml").write_text(f"models:\n  default: {{model: m, base_url: '{base_url}'{extra}}}\n")
    return load_settings()


async def test_an_unreachable_server_ends_the_run_with_an_error_in_a_few_attempts(tmp_path: Path) -> None:
    """Before: the manager picked the failing planner again until max_turns (33 calls) and returned "" as if fine."""
    team = GroupChatTeam(TeamSpec.model_validate(ALWAYS_PLAN), settings_for("http://127.0.0.1:1/v1", tmp_path))
    started = time.perf_counter()
    try:
        result = await team.run("What is 2+2?")
    finally:
        await team.close()
    assert time.perf_counter() - started < 10
    assert result.answer == ""
    assert result.stop_reason.startswith("error: no answer (")
    assert "planner failed: APIConnectionError" in result.stop_reason and "responder failed" in result.stop_reason
    assert result.usage.calls <= 6 and result.usage.errors == result.usage.calls  # every attempt is in the ledger
    assert [d.speaker for d in result.decisions] == ["planner", "responder"]


async def test_a_prompt_that_cannot_fit_the_context_window_is_refused_without_a_call(tmp_path: Path) -> None:
    with ScriptedServer(rules=[Rule(reply=Reply(content="never"))]) as server:
        team = GroupChatTeam(
            TeamSpec.model_validate(ALWAYS_PLAN),
            settings_for(server.base_url, tmp_path, context_window=300, max_tokens=50),
        )
        try:
            result = await team.run("Please summarise: " + "lorem ipsum dolor " * 200)
        finally:
            await team.close()
        assert server.chat_requests == []  # refused before any request
    assert result.answer == "" and "context window of 300 tokens" in result.stop_reason
    assert "ContextOverflow" in result.stop_reason


@pytest.mark.local_model
def test_a_prompt_over_the_local_window_is_one_error_line_not_a_traceback() -> None:
    """Before: `huddle models` said 8,192 while llama.cpp held 4,096, and a 20 KB prompt ended in a traceback."""
    models = subprocess.run(
        [sys.executable, "-m", "huddle", "models", "--json"], capture_output=True, text=True, timeout=120, check=True
    )
    local = next(row for row in json.loads(models.stdout) if row["name"] == "local")
    assert local["context_window"] == 4096
    prompt = base64.b64encode(random.Random(0).randbytes(20_000)).decode()
    proc = subprocess.run(
        [sys.executable, "-m", "huddle", "-m", "local", "ask", prompt],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("error:") == 1 and "context window of 4096 tokens" in proc.stderr
