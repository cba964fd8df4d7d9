"""Durable sessions: a run killed with SIGKILL mid-turn resumes, and nothing acknowledged is lost or doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from huddle.testing import Reply, Rule, ScriptedServer

TEAM = """
team: {name: desk, max_turns: 6}
agents:
  - {role: tool_executor, tools: [calculator]}
  - {role: responder}
"""
KEY = "sk-planted-session-key-98765"


def huddle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huddle", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENAI_API_KEY": KEY},
    )


def test_sigkill_mid_turn_then_resume(tmp_path: Path, isolated_env: Path) -> None:
    with ScriptedServer(
        rules=[
            # The first answer to the second question hangs, so the process is killed mid-turn.
            Rule(agent="manager", reply=Reply(content="responder")),
            Rule(agent="responder", last="second question", times=1, reply=Reply(content="never sent", delay_s=60)),
            Rule(agent="responder", last="second question", reply=Reply(content="answer two")),
            Rule(reply=Reply(content="answer one")),
        ]
    ) as server:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{server.base_url}'}}\n"
        )
        (tmp_path / "team.yaml").write_text(TEAM)
        first = huddle("run", "first question", "--team", "team.yaml", "--session", "S1")
        assert first.returncode == 0, first.stderr

        victim = subprocess.Popen(
            [sys.executable, "-m", "huddle", "run", "second question", "--team", "team.yaml", "--session", "S1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OPENAI_API_KEY": KEY},
        )
        deadline = time.monotonic() + 60
        while not any(r.agent == "responder" and "second question" in json.dumps(r.messages) for r in server.requests):
            assert time.monotonic() < deadline, "the second turn never reached the model"
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)

        listed = json.loads(huddle("sessions", "list", "--json").stdout)
        assert [(s["id"], s["turns"], s["unfinished"]) for s in listed] == [("S1", 2, 1)]

        resumed = huddle("run", "--team", "team.yaml", "--session", "S1", "--resume", "--json")
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["answer"] == "answer two"
        redo_request = json.dumps(server.chat_requests[-1].messages)
        assert server.chat_requests[-1].agent == "responder"
        assert "first question" in redo_request and "answer one" in redo_request  # the state after turn 1 was loaded

    turns = json.loads(huddle("sessions", "show", "S1", "--json").stdout)
    assert [(t["turn"], t["task"], t["status"], t["answer"]) for t in turns] == [
        (1, "first question", "done", "answer one"),
        (2, "second question", "done", "answer two"),
    ]
    conversation = [m["content"] for t in turns for m in t["messages"]]
    assert conversation == ["first question", "answer one", "second question", "answer two"]
    stored = (isolated_env / "sessions.sqlite").read_bytes()
    assert KEY.encode() not in stored
    assert huddle("sessions", "delete", "S1").returncode == 0
    assert huddle("sessions", "show", "S1").returncode == 1


def test_resume_needs_a_session() -> None:
    proc = huddle("run", "--resume")
    assert proc.returncode == 2 and "--resume needs --session" in proc.stderr
