"""Shared memory through the team, across processes: a fact stored in one run is recalled in the next."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from huddle.config.settings import load_settings
from huddle.memory.store import VectorMemory
from huddle.testing import RecordedRequest, Reply, Rule, ScriptedServer

TEAM = """
team: {name: helpdesk, max_turns: 8}
agents:
  - {role: memory}
  - {role: responder}
"""


def huddle(*args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "huddle", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def echo_context(request: RecordedRequest) -> Reply:
    return Reply(content="I was given: " + " | ".join(str(m.get("content")) for m in request.messages[1:]))


def test_fact_from_run_one_is_recalled_in_run_two(tmp_path: Path, isolated_env: Path) -> None:
    with ScriptedServer(rules=[Rule(agent="responder", reply=echo_context)]) as server:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{server.base_url}'}}\n"
        )
        (tmp_path / "team.yaml").write_text(TEAM)

        first = huddle("run", "Please remember that my order number is 1042.", "--team", "team.yaml")
        second = huddle("run", "What is my order number?", "--team", "team.yaml")

    stored = next(m for m in first["messages"] if m["source"] == "memory")  # type: ignore[index, union-attr]
    assert "stored: my order number is 1042" in stored["content"]
    recall = next(m for m in second["messages"] if m["source"] == "memory")  # type: ignore[index, union-attr]
    assert "my order number is 1042 (score" in recall["content"]
    assert [d["speaker"] for d in second["decisions"]] == ["memory", "responder"]  # type: ignore[index, union-attr]
    assert "1042" in str(second["answer"])  # the responder was shown the recalled fact
    items = VectorMemory.from_settings(load_settings()).list(scope="user:default")
    assert [(i.text, i.agent, i.run_id) for i in items] == [("my order number is 1042", "memory", first["run_id"])]
