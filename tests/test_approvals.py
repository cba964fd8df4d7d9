"""Approvals: a tool call that waits for a person pauses the run (nothing waits), and a decision resumes it — in the
same process (Python), or in another one (`huddle approve`), with the side effect counted in a file."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from huddle.agents.approval import ApprovalContext, ApprovalDecision, PendingCall
from huddle.errors import HuddleError
from huddle.teams.base import Team
from huddle.testing import RecordedRequest, Reply, Rule, ScriptedServer
from huddle.tools.results import ToolArgumentsError
from tests.serving import scripted_settings

TOOLS = '''
from pathlib import Path

from huddle.tools import tool


@tool(side_effects="write")
def bump(note: str) -> str:
    """Add one to the counter in count.txt (a side effect the tests count)."""
    path = Path("count.txt")
    count = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(count))
    return f"counter is {count} ({note})"


@tool(side_effects="external")
def send(to: str) -> str:
    """Send a message to someone."""
    return f"sent to {to}"


@tool
def look(query: str) -> str:
    """Look something up."""
    return f"found {query}"


def refuse_sends(call, context):
    """The hook: sends are refused, lookups allowed, everything else as the policy says."""
    return {"send": False, "look": True}.get(call.tool)
'''


def team_yaml(tool: str = "bump", approval: str = "always", extra: str = "") -> str:
    executor = f"{{role: tool_executor, tools: ['approval_tools:{tool}']" + (
        f", approval: {approval}}}" if approval else "}"
    )
    members = f"  - {{role: planner}}\n  - {executor}\n  - {{role: responder}}\n"
    return f"team: {{name: gate, plan: always{extra}}}\nagents:\n{members}"


def plan(tool: str = "bump", args: dict[str, str] | None = None) -> str:
    step = {
        "id": 1,
        "assignee": "tool_executor",
        "instruction": "do it",
        "tool": tool,
        "args": json.dumps(args or {"note": "hello"}),
        "depends_on": [],
    }
    return json.dumps({"goal": "do it", "steps": [step], "done": False})


def echo(request: RecordedRequest) -> Reply:
    """The responder says what it was sent, so a test sees the tool's result (or the denial) reach it."""
    return Reply(content=f"Answer from: {request.last_text}")


PLANNED = [plan()]
"""What the scripted planner plans (a test that needs another tool sets it)."""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[ScriptedServer]:
    (tmp_path / "approval_tools.py").write_text(TOOLS)
    sys.path.insert(0, str(tmp_path))
    PLANNED[:] = [plan()]
    with ScriptedServer(
        rules=[Rule(agent="planner", reply=lambda _: Reply(content=PLANNED[0])), Rule(agent="responder", reply=echo)]
    ) as server:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: 0}}\n"
        )
        yield server
    sys.path.remove(str(tmp_path))
    sys.modules.pop("approval_tools", None)


def count() -> int:
    path = Path("count.txt")
    return int(path.read_text()) if path.exists() else 0


def load(server: ScriptedServer, yaml: str, **kwargs: object) -> Team:
    Path("team.yaml").write_text(yaml)
    return Team.load("team.yaml", scripted_settings(Path.cwd(), server), **kwargs)


async def paused(team: Team) -> list[PendingCall]:
    result = await team.run("bump the counter")
    assert (result.answer, result.stop_reason) == ("", "awaiting_approval"), result.stop_reason
    assert count() == 0
    return result.pending


def test_a_call_under_approval_always_pauses_and_runs_once_when_approved(project: ScriptedServer) -> None:
    async def main() -> None:
        async with load(project, team_yaml()) as team:
            [call] = await paused(team)
            assert (call.tool, call.args, call.agent, call.step_id) == ("bump", {"note": "hello"}, "tool_executor", 1)
            result = await team.resume({call.id: ApprovalDecision.approve()})
            assert count() == 1
            assert "counter is 1 (hello)" in result.answer and result.pending == []
            assert "waiting for a person's approval" not in result.answer  # the real result replaced the wait
            assert [a.action for a in team.state.approvals] == ["approve"]

    asyncio.run(main())


def test_a_denial_reaches_the_model_as_the_tool_result(project: ScriptedServer) -> None:
    async def main() -> None:
        async with load(project, team_yaml()) as team:
            [call] = await paused(team)
            result = await team.resume({call.id: ApprovalDecision.deny("not on a Sunday")})
            assert count() == 0 and "not on a Sunday" in result.answer
            assert result.stop_reason != "awaiting_approval" and result.answer

    asyncio.run(main())


def test_an_invalid_edit_is_refused_and_nothing_runs(project: ScriptedServer) -> None:
    async def main() -> None:
        async with load(project, team_yaml()) as team:
            [call] = await paused(team)
            with pytest.raises(ToolArgumentsError, match="note"):
                team.resume_stream({call.id: ApprovalDecision.edit({"nope": 1})})
            with pytest.raises(HuddleError, match="no pending call"):
                team.resume_stream({"call_x": ApprovalDecision.approve()})
            assert count() == 0 and team.state.pending == [call]
            result = await team.resume({call.id: ApprovalDecision.edit({"note": "edited"})})
            assert count() == 1 and "counter is 1 (edited)" in result.answer

    asyncio.run(main())


def test_an_expired_approval_is_denied(project: ScriptedServer) -> None:
    async def main() -> None:
        async with load(project, team_yaml(extra=", approval_timeout_s: 0.01")) as team:
            [call] = await paused(team)
            time.sleep(0.05)
            result = await team.resume({call.id: ApprovalDecision.approve()})
            assert count() == 0 and "expired" in result.answer
            assert [(a.action, a.by) for a in team.state.approvals] == [("deny", "expired")]

    asyncio.run(main())


def test_the_default_policy_asks_for_external_tools_and_not_for_reads(project: ScriptedServer) -> None:
    PLANNED[0] = plan("send", {"to": "ann"})

    async def main() -> None:
        async with load(project, team_yaml("send", approval="")) as team:
            result = await team.run("send it")
            assert [c.tool for c in result.pending] == ["send"]
        PLANNED[0] = plan("look", {"query": "x"})
        async with load(project, team_yaml("look", approval="")) as team:
            result = await team.run("look it up")
            assert result.pending == [] and "found x" in result.answer

    asyncio.run(main())


def test_the_hook_allows_and_denies_without_asking(project: ScriptedServer) -> None:
    def allow_all(call: PendingCall, context: ApprovalContext) -> bool | None:
        assert context.task == "bump the counter" and context.agent == "tool_executor"
        return True

    async def main() -> None:
        async with load(project, team_yaml(), approve=allow_all) as team:
            result = await team.run("bump the counter")
            assert result.pending == [] and count() == 1
        PLANNED[0] = plan("send", {"to": "ann"})
        yaml = team_yaml("send", approval="", extra=", approve: 'approval_tools:refuse_sends'")
        async with load(project, yaml) as team:
            result = await team.run("send it")
            assert result.pending == [] and "denied" in result.answer

    asyncio.run(main())


def huddle(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huddle", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )


def pending_ids(stderr: str) -> list[str]:
    return [line.split()[2].rstrip(":") for line in stderr.splitlines() if line.startswith("awaiting approval")]


def test_run_exits_3_and_approve_in_a_new_process_runs_the_tool_once(project: ScriptedServer) -> None:
    Path("team.yaml").write_text(team_yaml())
    paused_run = subprocess.Popen(
        [sys.executable, "-m", "huddle", "run", "bump the counter", "--team", "team.yaml", "--session", "s1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = paused_run.communicate(timeout=300)
    assert paused_run.returncode == 3, stderr
    assert "wants bump" in stderr and "huddle approve s1" in stderr and count() == 0
    approved = huddle("approve", "s1", "--team", "team.yaml")
    assert approved.returncode == 0, approved.stderr
    assert count() == 1 and "counter is 1 (hello)" in approved.stdout
    again = huddle("approve", "s1", "--team", "team.yaml")
    assert again.returncode == 1 and "no tool call waiting" in again.stderr and count() == 1


def test_approve_denies_and_refuses_an_invalid_edit_in_one_line(project: ScriptedServer) -> None:
    Path("team.yaml").write_text(team_yaml())
    proc = huddle("run", "bump the counter", "--team", "team.yaml", "--session", "s2", "--json")
    assert proc.returncode == 3 and [p["tool"] for p in json.loads(proc.stdout)["pending"]] == ["bump"]
    [call] = pending_ids(proc.stderr)
    bad = huddle("approve", "s2", call, "--args", '{"nope": 1}', "--team", "team.yaml")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "note" in bad.stderr
    denied = huddle("approve", "s2", call, "--deny", "not today", "--team", "team.yaml")
    assert denied.returncode == 0, denied.stderr
    assert "not today" in denied.stdout and count() == 0


def test_run_without_a_session_says_it_cannot_be_resumed(project: ScriptedServer) -> None:
    Path("team.yaml").write_text(team_yaml())
    proc = huddle("run", "bump the counter", "--team", "team.yaml")
    assert proc.returncode == 3 and "--session" in proc.stderr and count() == 0


def test_piped_chat_prints_the_pending_calls_and_goes_on(project: ScriptedServer) -> None:
    Path("team.yaml").write_text(team_yaml())
    chat = huddle("chat", "--team", "team.yaml", "--session", "c1", stdin="bump the counter\n/exit\n")
    assert chat.returncode == 0, chat.stderr
    assert len(pending_ids(chat.stderr)) == 1 and count() == 0
    approved = huddle("approve", "c1", "--team", "team.yaml")
    assert approved.returncode == 0 and count() == 1 and "counter is 1" in approved.stdout
