"""Durable sessions: a run killed with SIGKILL mid-turn resumes, and nothing acknowledged is lost or doubled."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from huddle.storage.sessions import SessionStore
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


def kill_mid_turn(server: ScriptedServer, task: str) -> None:
    """Run `task` on session S1 and SIGKILL the process once its responder has asked the model (a hanging reply)."""
    victim = subprocess.Popen(
        [sys.executable, "-m", "huddle", "run", task, "--team", "team.yaml", "--session", "S1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OPENAI_API_KEY": KEY},
    )
    deadline = time.monotonic() + 60
    while not any(r.agent == "responder" and task in json.dumps(r.messages) for r in server.requests):
        assert time.monotonic() < deadline, f"{task!r} never reached the model"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)


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

        kill_mid_turn(server, "second question")

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


def test_a_turn_resumed_after_a_later_one_is_in_the_conversation_later_turns_see(
    tmp_path: Path, isolated_env: Path
) -> None:
    """Turn 2 killed, turn 3 sent anyway (the CLI only hints at --resume), then --resume: turn 2 is redone on top of
    turn 3, and turn 4 goes on from that state, so its responder is shown every earlier exchange (1, 3, 2)."""
    with ScriptedServer(
        rules=[
            Rule(agent="manager", reply=Reply(content="responder")),
            Rule(agent="responder", last="second question$", times=1, reply=Reply(content="never sent", delay_s=60)),
            Rule(agent="responder", last="second question$", reply=Reply(content="answer two")),
            Rule(agent="responder", last="third question$", reply=Reply(content="answer three")),
            Rule(agent="responder", last="fourth question$", reply=Reply(content="answer four")),
            Rule(reply=Reply(content="answer one")),
        ]
    ) as server:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{server.base_url}'}}\n"
        )
        (tmp_path / "team.yaml").write_text(TEAM)
        assert huddle("run", "first question", "--team", "team.yaml", "--session", "S1").returncode == 0
        kill_mid_turn(server, "second question")
        third = huddle("run", "third question", "--team", "team.yaml", "--session", "S1")
        assert third.returncode == 0 and "--resume redoes it" in third.stderr + third.stdout, third.stderr
        resumed = huddle("run", "--team", "team.yaml", "--session", "S1", "--resume", "--json")
        assert resumed.returncode == 0 and json.loads(resumed.stdout)["answer"] == "answer two", resumed.stderr
        fourth = huddle("run", "fourth question", "--team", "team.yaml", "--session", "S1", "--json")
        assert fourth.returncode == 0 and json.loads(fourth.stdout)["answer"] == "answer four", fourth.stderr
        seen = json.dumps(server.chat_requests[-1].messages)
        assert server.chat_requests[-1].agent == "responder"
        for exchange in ("first question", "answer one", "third question", "answer three"):
            assert exchange in seen
        assert "second question" in seen and "answer two" in seen  # the redone turn is not lost
    turns = json.loads(huddle("sessions", "show", "S1", "--json").stdout)
    assert [(t["turn"], t["status"], t["answer"]) for t in turns] == [
        (1, "done", "answer one"),
        (2, "done", "answer two"),
        (3, "done", "answer three"),
        (4, "done", "answer four"),
    ]


def test_resume_needs_a_session() -> None:
    proc = huddle("run", "--resume")
    assert proc.returncode == 2 and "--resume needs --session" in proc.stderr


def test_a_sessions_file_from_before_failed_turns_opens_and_gains_their_reason(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite"
    old = sqlite3.connect(path)  # the schema before turns could fail or be cancelled: no error column
    old.executescript(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, team TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);"
        "CREATE TABLE turns (session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, turn INTEGER NOT NULL,"
        " run_id TEXT NOT NULL, task TEXT NOT NULL, status TEXT NOT NULL, answer TEXT, state TEXT, plan TEXT,"
        " decisions TEXT, messages TEXT, started REAL NOT NULL, finished REAL, PRIMARY KEY (session_id, turn));"
        "INSERT INTO sessions VALUES ('S', 'desk', 1, 1);"
        "INSERT INTO turns (session_id, turn, run_id, task, status, answer, state, started)"
        " VALUES ('S', 1, 'r1', 'old question', 'done', 'old answer', '{\"chat\": {}}', 1);"
    )
    old.close()
    with SessionStore(path) as store:
        assert [(t.task, t.status, t.error) for t in store.turns("S")] == [("old question", "done", None)]
        turn = store.begin_turn("S", "desk", "new question", "r2")
        store.finish_turn("S", turn, status="cancelled", error="cancelled by the user")
        store.finish_turn("S", turn, answer="late", state={"chat": {}})  # a turn that ended keeps its first ending
        assert [(t.status, t.error) for t in store.turns("S")] == [
            ("done", None),
            ("cancelled", "cancelled by the user"),
        ]
        assert store.unfinished("S") is None and store.saved_state("S") == {"chat": {}}
        assert [s.unfinished for s in store.sessions()] == [0]
    # Every step ran: the error column, then the paused run state (approvals).
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (3,)


def test_a_sessions_file_that_already_gained_the_error_column_ad_hoc_opens(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite"
    with SessionStore(path) as store:
        turn = store.begin_turn("S", "desk", "question", "r1")
        store.finish_turn("S", turn, status="failed", error="the model was unreachable")
    before_versions = sqlite3.connect(path)  # as the ad-hoc upgrade left files: the column, but user_version 0
    before_versions.execute("PRAGMA user_version = 0")
    before_versions.close()
    with SessionStore(path) as store:
        assert [(t.status, t.error) for t in store.turns("S")] == [("failed", "the model was unreachable")]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (3,)


def test_a_sessions_file_from_a_newer_huddle_is_refused_with_one_error_line(isolated_env: Path) -> None:
    isolated_env.mkdir(parents=True)
    newer = sqlite3.connect(isolated_env / "sessions.sqlite")
    newer.execute("PRAGMA user_version = 4")
    newer.close()
    proc = huddle("sessions", "list")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: the sessions store ") and "schema version 4" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_session_is_leased_by_one_process_at_a_time(tmp_path: Path) -> None:
    """While one process runs a turn, a second on the same session (run, --resume, chat, delete) is refused with the
    holder's pid and calls no model; once the holder is killed, the session resumes at once (the lock died with it)."""
    with ScriptedServer(
        rules=[
            Rule(agent="manager", reply=Reply(content="responder")),
            Rule(agent="responder", last="slow question", times=1, reply=Reply(content="never sent", delay_s=60)),
            Rule(reply=Reply(content="the answer")),
        ]
    ) as server:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{server.base_url}'}}\n"
        )
        (tmp_path / "team.yaml").write_text(TEAM)
        holder = subprocess.Popen(
            [sys.executable, "-m", "huddle", "run", "slow question", "--team", "team.yaml", "--session", "S1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OPENAI_API_KEY": KEY},
        )
        try:
            deadline = time.monotonic() + 60
            while not any(r.agent == "responder" for r in server.requests):
                assert time.monotonic() < deadline, "the first turn never reached the model"
                time.sleep(0.05)
            calls = len(server.requests)
            for args in (
                ("run", "another question", "--team", "team.yaml", "--session", "S1"),
                ("run", "--team", "team.yaml", "--session", "S1", "--resume"),
                ("chat", "--team", "team.yaml", "--session", "S1"),
                ("sessions", "delete", "S1"),
            ):
                proc = huddle(*args)
                lines = [line for line in proc.stderr.splitlines() if line.strip()]
                assert proc.returncode == 1 and len(lines) == 1, (args, proc.stderr)
                assert lines[0].startswith(f"error: session S1 is in use by process {holder.pid}; "), lines[0]
            assert len(server.requests) == calls  # no second process reached the model
            other = huddle("run", "elsewhere", "--team", "team.yaml", "--session", "S2")
            assert other.returncode == 0, other.stderr  # other sessions are not held
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
        resumed = huddle("run", "--team", "team.yaml", "--session", "S1", "--resume", "--json")
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["answer"] == "the answer"
