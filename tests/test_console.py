"""What `huddle run` shows while a team works, and how a run ends: the transcript at each verbosity, the spinner,
speaker events in the run stream, Ctrl-C cancelling a turn, and one error line when a run gives no answer."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from autogen_agentchat.messages import ModelClientStreamingChunkEvent, SelectSpeakerEvent, TextMessage
from rich.console import Console

from huddle.cli.console import Interrupted, Transcript, Verbosity, run_turn
from huddle.config.settings import load_settings
from huddle.storage.sessions import SessionStore
from huddle.teams.base import RunResult
from huddle.teams.durable import DurableTeam
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.managed_chat import Event
from huddle.teams.spec import TeamSpec
from huddle.testing import Fault, Reply, Rule, ScriptedServer
from tests.plans import calculator_plan

CALC = {
    "team": {"name": "calc", "max_turns": 12},
    "agents": [{"role": "planner"}, {"role": "tool_executor", "tools": ["calculator"]}, {"role": "responder"}],
}
PLAN = calculator_plan()
DESK = {
    "team": {"name": "desk", "max_turns": 4},
    "agents": [{"role": "tool_executor", "tools": ["calculator"]}, {"role": "responder"}],
}
PICK_RESPONDER = Rule(agent="manager", reply=Reply(content="responder"))


def transcript(verbosity: Verbosity, *, spinner: bool = False) -> tuple[Transcript, io.StringIO, io.StringIO]:
    out, status = io.StringIO(), io.StringIO()
    shown = Transcript(
        Console(file=out, width=200),
        "responder",
        verbosity=verbosity,
        status=Console(file=status, force_terminal=True, width=200) if spinner else None,
        team="calc",
    )
    return shown, out, status


def a_run() -> list[Event]:
    """A planner turn with a manager's decision, a memory agent's internal note, then the answer in chunks."""
    return [
        TextMessage(content="What is 17*23?", source="user"),
        SelectSpeakerEvent(
            content=["memory"], source="manager", metadata={"policy": "rule", "reason": "new task: recall"}
        ),
        TextMessage(
            content="nothing relevant recalled", source="memory", metadata={"kind": "memory", "internal": "true"}
        ),
        SelectSpeakerEvent(content=["planner"], source="manager", metadata={"policy": "rule", "reason": "plan it"}),
        TextMessage(content="Plan: multiply", source="planner", metadata={"kind": "plan"}),
        ModelClientStreamingChunkEvent(content="17*23 ", source="responder"),
        ModelClientStreamingChunkEvent(content="is 391.", source="responder"),
        TextMessage(content="17*23 is 391.", source="responder"),
    ]


def show(shown: Transcript, items: list[Event]) -> None:
    for item in items:
        shown.show(item)
    shown.close()


def test_an_internal_note_is_hidden_by_default_and_shown_when_verbose() -> None:
    shown, out, _ = transcript("normal")
    show(shown, a_run())
    assert out.getvalue() == "planner> Plan: multiply\nresponder> 17*23 is 391.\n"
    shown, out, _ = transcript("verbose")
    show(shown, a_run())
    assert "memory (note)> nothing relevant recalled" in out.getvalue()


def test_quiet_prints_the_answer_only() -> None:
    shown, out, _ = transcript("quiet")
    show(shown, a_run())
    assert out.getvalue() == "17*23 is 391.\n"
    shown, out, _ = transcript("quiet")
    show(shown, [TextMessage(content="Plan: x", source="planner"), TextMessage(content="Done.", source="responder")])
    assert out.getvalue() == "Done.\n"  # a whole (not streamed) answer too


def test_verbose_shows_the_managers_decisions_with_policy_and_reason() -> None:
    shown, out, _ = transcript("verbose")
    show(shown, a_run())
    lines = out.getvalue().splitlines()
    assert "manager> memory (rule: new task: recall)" in lines
    assert lines.index("manager> planner (rule: plan it)") < lines.index("planner> Plan: multiply")


def test_the_spinner_names_the_agent_thinking_and_counts_the_seconds() -> None:
    shown, out, status = transcript("normal", spinner=True)
    items = a_run()
    for item in items[:4]:  # up to the planner's selection
        shown.show(item)
    time.sleep(0.5)
    for item in items[4:]:
        shown.show(item)
    shown.close()
    spun = status.getvalue()
    seconds = [float(s) for s in re.findall(r"planner thinking… (\d+\.\d) s", spun)]
    assert len(set(seconds)) >= 2 and 0.3 <= max(seconds) < 1.0  # refreshed while the planner thinks
    assert "thinking" not in out.getvalue()  # on its own console (stderr), never in the transcript
    time.sleep(0.3)
    shown.show(TextMessage(content="next question", source="user"))  # the next turn of a chat: the clock restarts
    shown.close()
    assert status.getvalue()[len(spun) :].count("calc thinking… 0.0 s") == 1
    shown, _, status = transcript("quiet", spinner=True)
    show(shown, items)
    assert status.getvalue() == ""


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


@pytest.fixture
def project(server: ScriptedServer, tmp_path: Path) -> Path:
    (tmp_path / "huddle.yaml").write_text(
        f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: 0}}\n"
    )
    return tmp_path


async def test_the_run_stream_names_each_speaker_and_results_hold_chat_messages_only(
    server: ScriptedServer, project: Path, isolated_env: Path
) -> None:
    server.add_rule(Rule(agent="planner", reply=Reply(content=PLAN)))
    server.add_rule(Rule(agent="responder", reply=Reply(content="17*23 is 391.")))
    settings = load_settings()
    team = GroupChatTeam(TeamSpec.model_validate(CALC), settings, session_id="S")
    store = SessionStore(settings.sessions_path)
    items = [item async for item in DurableTeam(team, store, "S").run_stream("What is 17*23?")]
    await team.close()
    result = items.pop()
    assert isinstance(result, RunResult) and result.answer == "17*23 is 391."
    selected = [item for item in items if isinstance(item, SelectSpeakerEvent)]
    assert [(s.content, s.metadata) for s in selected] == [
        ([d.speaker], {"turn": str(d.turn), "policy": d.policy, "reason": d.reason}) for d in result.decisions
    ]
    assert [m.source for m in result.messages] == ["user", "planner", "tool_executor", "responder"]
    (turn,) = store.turns("S")
    assert [m["type"] for m in turn.messages] == ["TextMessage"] * 4
    store.close()


async def test_ctrl_c_cancels_the_turn_at_once_and_the_next_turn_does_not_see_it(
    server: ScriptedServer, project: Path
) -> None:
    server.add_rule(PICK_RESPONDER)
    server.add_rule(Rule(agent="responder", last="first", reply=Reply(content="never sent", delay_s=30)))
    server.add_rule(Rule(agent="responder", reply=Reply(content="second answer")))
    settings = load_settings()
    team = GroupChatTeam(TeamSpec.model_validate(DESK), settings, session_id="S")
    store = SessionStore(settings.sessions_path)
    durable = DurableTeam(team, store, "S")
    await durable.open()

    def answering() -> list[Any]:
        return [r for r in server.chat_requests if r.agent == "responder"]

    async def press_ctrl_c() -> float:
        while not answering():
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        return time.monotonic()

    presser = asyncio.ensure_future(press_ctrl_c())
    with pytest.raises(Interrupted):
        await run_turn(durable.run_stream("first question"), None)
    assert time.monotonic() - await presser < 1.0
    assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing of the cancelled turn keeps running
    requests = len(server.chat_requests)
    await asyncio.sleep(0.3)
    assert len(server.chat_requests) == requests and len(answering()) == 1  # and nothing asks the model again
    assert [(t.status, t.error) for t in store.turns("S")] == [("cancelled", "cancelled by the user")]
    assert store.unfinished("S") is None  # not offered for redo

    result = await run_turn(durable.run_stream("second question"), None)
    assert result.answer == "second answer"
    sent = json.dumps(answering()[-1].messages)
    assert "second question" in sent and "first question" not in sent  # the cancelled turn left no trace
    assert [t.status for t in store.turns("S")] == ["cancelled", "done"]
    await team.close()
    store.close()


class Exploding:
    """A team whose run raises after its first event (as a member with no failure handling would)."""

    def __init__(self, spec: TeamSpec) -> None:
        self.spec, self.responder = spec, "responder"
        self.loaded: list[dict[str, Any]] = []

    async def run_stream(self, task: str, **_: Any) -> AsyncIterator[Event | RunResult]:
        yield TextMessage(content=task, source="user")
        raise ConnectionError("the tool server hung up")

    async def save_state(self) -> dict[str, Any]:
        return {"chat": "before"}

    async def load_state(self, state: dict[str, Any]) -> None:
        self.loaded.append(state)


async def test_a_turn_whose_run_raises_is_recorded_failed_and_the_team_put_back(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions.sqlite")
    team = Exploding(TeamSpec.model_validate(DESK))
    durable = DurableTeam(team, store, "S")  # duck-typed: the part of Team a DurableTeam uses
    with pytest.raises(ConnectionError):
        await run_turn(durable.run_stream("hello"), None)
    (turn,) = store.turns("S")
    assert (turn.status, turn.error) == ("failed", "ConnectionError: the tool server hung up")
    assert store.unfinished("S") is None and team.loaded == [{"chat": "before"}]
    store.close()


def huddle(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huddle", *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )


def test_a_run_that_cannot_answer_prints_one_error_line_and_exits_1(server: ScriptedServer, project: Path) -> None:
    server.add_rule(Rule(fault=Fault(kind="server_error")))
    (project / "team.yaml").write_text(json.dumps(DESK))
    proc = huddle("run", "hi", "--team", "team.yaml")
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "Traceback" not in proc.stderr
    assert proc.stdout == ""  # the responder's failure is not shown as if it were the answer
    proc = huddle("run", "hi", "--team", "team.yaml", "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["answer"] == ""
    assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1


def test_quiet_run_prints_the_answer_only_and_verbose_the_decisions(server: ScriptedServer, project: Path) -> None:
    server.add_rule(PICK_RESPONDER)
    server.add_rule(Rule(agent="responder", reply=Reply(content="Hello there.")))
    (project / "team.yaml").write_text(json.dumps(DESK))
    proc = huddle("run", "hi", "--team", "team.yaml", "--quiet")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "Hello there.\n", "")
    proc = huddle("run", "hi", "--team", "team.yaml", "--verbose")
    assert proc.returncode == 0 and "manager> responder (llm: chosen by the manager's model)" in proc.stdout
    assert "model calls" in proc.stderr
    proc = huddle("run", "hi", "--team", "team.yaml", "--quiet", "--verbose")
    assert proc.returncode == 2 and "exclude each other" in proc.stderr


def test_ctrl_c_in_run_prints_one_line_and_exits_130_at_once(server: ScriptedServer, project: Path) -> None:
    server.add_rule(PICK_RESPONDER)
    server.add_rule(Rule(agent="responder", reply=Reply(content="never sent", delay_s=30)))
    (project / "team.yaml").write_text(json.dumps(DESK))
    args = [sys.executable, "-m", "huddle", "run", "hi", "--team", "team.yaml", "--session", "R"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(r.agent == "responder" for r in server.chat_requests):
        assert time.monotonic() < deadline and proc.poll() is None, "the run never reached the model"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    pressed = time.monotonic()
    _, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - pressed < 1.0
    assert proc.returncode == 130 and stderr == "interrupted: the run was cancelled\n"
    turns = json.loads(huddle("sessions", "show", "R", "--json").stdout)
    assert [t["status"] for t in turns] == ["cancelled"]
