"""``huddle run`` and ``huddle chat`` as a user runs them: subprocesses, the scripted server, the embedded model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from huddle.testing import Reply, Rule, ScriptedServer
from tests.plans import calculator_plan

TEAM = """
team: {name: calc, max_turns: 12, plan: always}
agents:
  - {role: planner}
  - {role: tool_executor, tools: [calculator, clock]}
  - {role: responder}
"""
PLAN = calculator_plan()


def huddle(*args: str, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huddle", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


@pytest.fixture
def scripted_project(tmp_path: Path) -> Iterator[ScriptedServer]:
    with ScriptedServer(
        rules=[
            Rule(agent="planner", reply=Reply(content=PLAN)),
            Rule(agent="responder", reply=Reply(content="17*23 is 391.")),
        ]
    ) as server:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{server.base_url}'}}\n"
        )
        (tmp_path / "team.yaml").write_text(TEAM)
        yield server


def test_run_json_has_the_documented_shape(scripted_project: ScriptedServer) -> None:
    proc = huddle("run", "What is 17*23?", "--team", "team.yaml", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) >= {"run_id", "team", "answer", "stop_reason", "messages", "usage", "decisions"}
    assert (result["team"], result["answer"]) == ("calc", "17*23 is 391.")
    assert [m["source"] for m in result["messages"]] == ["user", "planner", "tool_executor", "responder"]
    assert set(result["messages"][1]) == {"source", "type", "content", "metadata", "prompt_tokens", "completion_tokens"}
    assert result["messages"][1]["metadata"] == {"kind": "plan"}  # what the member reported besides its text
    assert [d["policy"] for d in result["decisions"]] == ["rule", "plan", "plan"]
    usage = result["usage"]
    assert usage["calls"] == 2 and set(usage["by_agent"]) == {"planner", "responder"}
    served = [r.usage for r in scripted_project.chat_requests]
    assert usage["prompt_tokens"] == sum(u[0] for u in served if u)
    assert usage["completion_tokens"] == sum(u[1] for u in served if u)


def test_run_prints_the_answer_and_a_meter(scripted_project: ScriptedServer) -> None:
    proc = huddle("run", "What is 17*23?", "--team", "team.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "responder> 17*23 is 391." in proc.stdout
    assert "2 model calls" in proc.stderr


def test_chat_reads_piped_lines(scripted_project: ScriptedServer) -> None:
    proc = huddle("chat", "--team", "team.yaml", stdin="hi\n\n/cost\n/plan\n/exit\nnever sent\n")
    assert proc.returncode == 0, proc.stderr
    assert "17*23 is 391." in proc.stdout
    assert "total" in proc.stdout and "Plan: multiply" in proc.stdout
    assert len(scripted_project.chat_requests) == 2  # one task; nothing after /exit


def test_unknown_team_is_a_one_line_error(tmp_path: Path) -> None:
    proc = huddle("run", "x", "--team", "nope")
    assert proc.returncode == 2 and "no such preset" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.local_model
def test_embedded_default_answers_offline_within_the_turn_limit() -> None:
    proc = huddle("run", "Give me three tips for writing clear emails", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["answer"].strip()
    assert len(result["decisions"]) <= 12 and result["stop_reason"]
    usage = result["usage"]
    assert usage["cost_usd"] == 0 and set(usage["by_model"]) == {"SmolLM2-135M-Instruct"}
    by_message = [(m["prompt_tokens"], m["completion_tokens"]) for m in result["messages"]]
    assert usage["prompt_tokens"] == sum(p for p, _ in by_message) > 0
    assert usage["completion_tokens"] == sum(c for _, c in by_message) > 0


def test_run_with_a_budget_reports_it_and_usage_shows_the_run(scripted_project: ScriptedServer) -> None:
    proc = huddle("run", "What is 17*23?", "--team", "team.yaml", "--json", "--max-usd", "0.5", "--max-tokens", "99999")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    budget = result["budget"]
    assert budget["limits"]["run"] == {"max_tokens": 99999, "max_usd": 0.5}
    assert budget["spent_run"]["calls"] == 2 and budget["level"] == "ok" and budget["decisions"] == []
    usage = json.loads(huddle("usage", "--run", result["run_id"], "--json").stdout)
    assert usage["total"]["calls"] == 2 and set(usage["by_agent"]) == {"planner", "responder"}
    assert "Usage by agent" in huddle("usage").stdout


PIPELINE = """
team: {name: pipe, kind: sequential}
agents:
  - {name: a, instruction: You are a.}
  - {name: b, instruction: You are b.}
  - {name: c, instruction: You are c.}
"""


@pytest.mark.parametrize("quiet", [True, False])
def test_a_pipeline_whose_step_fails_exits_1_and_a_budget_stop_prints_its_answer(tmp_path: Path, quiet: bool) -> None:
    """A failed middle step is no answer (exit 1, one error line); a budget stop answers with the last output, and
    that answer is printed although no responder message carried it (it was: exit 0 with nothing printed)."""
    from huddle.testing import Fault

    rules = [
        Rule(agent="a", last="fail", reply=Reply(content="a draft to fail")),
        Rule(agent="b", last="to fail", fault=Fault(kind="server_error")),
        Rule(agent="a", last="spend", reply=Reply(content="long " * 700)),
        Rule(reply=Reply(content="fine")),
    ]
    with ScriptedServer(rules=rules) as server:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: 0}}\n"
        )
        (tmp_path / "pipe.yaml").write_text(PIPELINE)
        flags = ["-q"] if quiet else []
        failed = huddle("run", *flags, "--no-cache", "--team", "pipe.yaml", "please fail")
        stopped = huddle("run", *flags, "--no-cache", "--max-tokens", "900", "--team", "pipe.yaml", "please spend")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "error: step 2 (b) failed:" in failed.stderr and "Traceback" not in failed.stderr
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "long long" in stopped.stdout
