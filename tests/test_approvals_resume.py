"""Approvals across crashes and partial decisions: an approved call runs exactly once however the processes die
(its side effect counted in a file), some calls may be decided before the others, and the budget is re-checked."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from huddle.agents.approval import ApprovalDecision
from huddle.testing import RecordedRequest, Reply, ScriptedServer
from huddle.usage import usage_scope
from huddle.usage.budget import Budget, Limit
from tests.test_approvals import PLANNED, count, echo, huddle, load, paused, pending_ids, plan, project, team_yaml

__all__ = ["project"]  # the fixture, shared with tests/test_approvals.py

SLOW_TOOL = '''
import time
from pathlib import Path

from huddle.tools import tool


@tool(side_effects="write")
def slow_bump(note: str) -> str:
    """Add one to count.txt, then take a while (long enough to be killed in the middle)."""
    path = Path("count.txt")
    path.write_text(str(int(path.read_text()) + 1 if path.exists() else 1))
    Path("started.txt").write_text("yes")
    time.sleep(float(Path("sleep.txt").read_text()) if Path("sleep.txt").exists() else 0)
    return f"slow counter is {path.read_text()} ({note})"
'''


def popen(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "huddle", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stall(request: RecordedRequest) -> Reply:
    """A responder that takes a minute: the process that waits for it is killed meanwhile."""
    time.sleep(60)
    return echo(request)


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_chat_killed_while_paused_is_approved_by_a_new_process_once(project: ScriptedServer) -> None:
    Path("team.yaml").write_text(team_yaml())
    chat = popen("chat", "--team", "team.yaml", "--session", "k1", stdin=subprocess.PIPE)
    assert chat.stdin is not None and chat.stderr is not None
    chat.stdin.write("bump the counter\n")
    chat.stdin.flush()
    for line in chat.stderr:  # the chat goes on waiting for the next line: it is killed there
        if line.startswith("awaiting approval"):
            break
    chat.send_signal(signal.SIGKILL)
    chat.wait(timeout=30)
    assert count() == 0
    approved = huddle("approve", "k1", "--team", "team.yaml")
    assert approved.returncode == 0, approved.stderr
    assert count() == 1 and "counter is 1 (hello)" in approved.stdout
    again = huddle("approve", "k1", "--team", "team.yaml")
    assert again.returncode == 1 and count() == 1


def test_an_approve_killed_while_the_tool_runs_never_runs_it_twice(project: ScriptedServer) -> None:
    Path("approval_tools.py").write_text(SLOW_TOOL)
    PLANNED[0] = plan("slow_bump")
    Path("team.yaml").write_text(team_yaml("slow_bump"))
    paused_run = huddle("run", "bump the counter", "--team", "team.yaml", "--session", "k2")
    assert paused_run.returncode == 3, paused_run.stderr
    Path("sleep.txt").write_text("60")
    approving = popen("approve", "k2", "--team", "team.yaml")
    wait_for(Path("started.txt"))
    os.kill(approving.pid, signal.SIGKILL)
    approving.wait(timeout=30)
    assert count() == 1
    Path("sleep.txt").write_text("0")
    again = huddle("approve", "k2", "--team", "team.yaml")
    assert again.returncode == 0, again.stderr
    assert count() == 1 and "interrupted" in again.stdout
    resumed = huddle("run", "--resume", "--session", "k2", "--team", "team.yaml")
    assert count() == 1 and "nothing to run" in resumed.stderr


def test_a_crash_after_the_tool_ran_reuses_its_result_on_resume(project: ScriptedServer) -> None:
    """Killed after the approved call finished (while the answer is written): `--resume` takes the turn up with the
    kept decision and result, the tool does not run again, and the answer uses the result."""
    Path("team.yaml").write_text(team_yaml())
    assert huddle("run", "bump the counter", "--team", "team.yaml", "--session", "k3").returncode == 3
    project.rules[1].reply = stall
    approving = popen("approve", "k3", "--team", "team.yaml")
    wait_for(Path("count.txt"))
    deadline = time.monotonic() + 60
    while not any(r.agent == "responder" for r in project.requests):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(approving.pid, signal.SIGKILL)
    approving.wait(timeout=30)
    project.rules[1].reply = echo
    resumed = huddle("run", "--resume", "--session", "k3", "--team", "team.yaml")
    assert resumed.returncode == 0, resumed.stderr
    assert count() == 1 and "counter is 1 (hello)" in resumed.stdout


def test_some_calls_decided_keep_the_run_paused_until_all_are(project: ScriptedServer) -> None:
    PLANNED[0] = _two_steps()

    async def main() -> None:
        async with load(project, team_yaml()) as team:
            first, second = await paused(team)
            half = await team.resume({first.id: ApprovalDecision.approve()})
            assert half.stop_reason == "awaiting_approval" and [p.id for p in half.pending] == [second.id]
            assert count() == 0
            done = await team.resume({second.id: ApprovalDecision.deny("one is enough")})
            assert count() == 1 and "one is enough" in done.answer and "counter is 1" in done.answer

    asyncio.run(main())


def _two_steps() -> str:
    """A plan with two bumps, each its own pending call."""
    steps = [
        {"id": i, "assignee": "tool_executor", "instruction": "do it", "tool": "bump", "args": '{"note": "n"}'}
        | {"depends_on": []}
        for i in (1, 2)
    ]
    return json.dumps({"goal": "do it", "steps": steps, "done": False})


def test_a_resume_after_the_run_budget_is_spent_runs_nothing_and_says_so(project: ScriptedServer) -> None:
    Path("team.yaml").write_text(team_yaml())
    assert huddle("run", "bump the counter", "--team", "team.yaml", "--session", "b1").returncode == 3
    planner_calls = len(project.chat_requests)
    config = Path("huddle.yaml")
    config.write_text(config.read_text() + "budget: {run: {max_tokens: 5}}\n")  # less than the planner already spent
    resumed = huddle("approve", "b1", "--team", "team.yaml", "--json")
    result = json.loads(resumed.stdout)
    assert resumed.returncode == 0, resumed.stderr  # an answer that says why nothing ran
    assert count() == 0 and len(project.chat_requests) == planner_calls  # no tool, no model call
    assert result["stop_reason"].startswith("budget") and "budget was spent" in result["answer"]
    assert result["usage"]["prompt_tokens"] > 5  # the paused run's spending counted: the resume kept its run id


def test_approve_one_of_two_calls_keeps_the_session_paused_until_the_other_is_decided(project: ScriptedServer) -> None:
    PLANNED[0] = _two_steps()
    Path("team.yaml").write_text(team_yaml())
    paused_run = huddle("run", "bump twice", "--team", "team.yaml", "--session", "p1")
    first, second = pending_ids(paused_run.stderr)
    half = huddle("approve", "p1", first, "--team", "team.yaml")
    assert half.returncode == 3 and pending_ids(half.stderr) == [second] and count() == 0
    done = huddle("approve", "p1", second, "--deny", "once is enough", "--team", "team.yaml")
    assert done.returncode == 0, done.stderr
    assert count() == 1 and "once is enough" in done.stdout and "counter is 1" in done.stdout


def test_a_resume_under_a_run_id_of_its_own_still_counts_the_paused_runs_spending(project: ScriptedServer) -> None:
    """A server resumes under its response's id: the budget check still sees what the run spent before it paused."""

    async def main() -> None:
        async with load(project, team_yaml()) as team:
            [call] = await paused(team)
            team.governor.budget = Budget(run=Limit(max_tokens=5))  # less than the planner already spent
            result = await team.resume({call.id: ApprovalDecision.approve()}, run_id="response-2")
            assert count() == 0 and result.stop_reason.startswith("budget") and "did not run" in result.answer

    asyncio.run(main())


def test_a_run_resumed_under_its_own_id_counts_the_paused_runs_spending_for_every_later_call(
    project: ScriptedServer,
) -> None:
    """Not only the check as it resumes: every call the resumed run makes is admitted against the whole run's
    spending, the planner's tokens before the pause included, though the ledger files them under two run ids."""

    async def main() -> None:
        async with load(project, team_yaml()) as team:
            [call] = await paused(team)
            before = team.ledger.totals(run_id=team.state.run_id).total_tokens
            result = await team.resume({call.id: ApprovalDecision.approve()}, run_id="response-2")
            after = team.ledger.totals(run_id="response-2").total_tokens
            assert count() == 1 and result.answer and before and after
            team.governor.budget = Budget(run=Limit(max_tokens=before + after))
            with usage_scope(run_id="response-2"):
                assert team.governor.level() == "hard"  # both runs' tokens: the whole budget

    asyncio.run(main())
