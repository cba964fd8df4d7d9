"""Approvals inside nested teams: a group chat that pauses inside a parallel (or sequential) team pauses the outer
run with its calls (their path naming the member), and a resume takes the group chat up in place: the sibling
members' outputs are kept, not asked for again (the scripted server's request counts say so)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from huddle.agents.approval import ApprovalDecision
from huddle.testing import RecordedRequest, Reply, Rule, ScriptedServer
from tests.test_approvals import PLANNED, count, echo, huddle, load, plan, project, team_yaml
from tests.test_approvals_resume import SLOW_TOOL, popen, wait_for

__all__ = ["project"]  # the fixture, shared with tests/test_approvals.py

PARALLEL = """team: {name: outer, kind: parallel}
agents:
  - {name: sibling, instruction: Say something.}
  - {name: desk, team: gate.yaml}
aggregator: {name: responder, instruction: Combine them.}
"""

SEQUENTIAL = """team: {name: line, kind: sequential}
agents:
  - {name: sibling, instruction: Say something.}
  - {name: desk, team: gate.yaml, input: 'bump the counter'}
  - {name: responder, instruction: 'Sum up: {input}'}
"""


def asked(server: ScriptedServer, agent: str) -> int:
    return sum(1 for r in server.chat_requests if r.agent == agent)


def test_a_group_chat_inside_a_parallel_team_pauses_and_resumes_in_place(project: ScriptedServer) -> None:
    Path("gate.yaml").write_text(team_yaml())

    async def main() -> None:
        async with load(project, PARALLEL) as team:
            result = await team.run("bump the counter")
            assert (result.answer, result.stop_reason) == ("", "awaiting_approval"), result.stop_reason
            [call] = result.pending
            assert (call.tool, call.path, call.agent) == ("bump", ["desk"], "tool_executor") and count() == 0
            siblings, planners, responders = (
                asked(project, "sibling"),
                asked(project, "planner"),
                asked(project, "responder"),
            )
            assert (siblings, planners) == (1, 1)
            done = await team.resume({call.id: ApprovalDecision.approve()})
            assert count() == 1 and done.pending == [] and "counter is 1 (hello)" in done.answer
            assert "## sibling" in done.answer and "## desk" in done.answer  # the aggregator got both outputs
            assert (asked(project, "sibling"), asked(project, "planner")) == (1, 1)  # neither asked again
            assert asked(project, "responder") == responders + 2  # the group chat's answer, then the aggregator's

    asyncio.run(main())


def test_a_group_chat_inside_a_sequential_team_resumes_and_the_pipeline_goes_on(project: ScriptedServer) -> None:
    Path("gate.yaml").write_text(team_yaml())

    async def main() -> None:
        async with load(project, SEQUENTIAL) as team:
            result = await team.run("start")
            [call] = result.pending
            assert call.path == ["desk"] and asked(project, "sibling") == 1
            denied = await team.resume({call.id: ApprovalDecision.deny("not now")})
            assert count() == 0 and "not now" in denied.answer and asked(project, "sibling") == 1
            assert denied.stop_reason.startswith("finished")

    asyncio.run(main())


def test_a_nested_pause_is_approved_from_another_process(project: ScriptedServer) -> None:
    Path("gate.yaml").write_text(team_yaml())
    Path("outer.yaml").write_text(PARALLEL)
    paused = huddle("run", "bump the counter", "--team", "outer.yaml", "--session", "n1")
    assert paused.returncode == 3, paused.stderr
    assert "wants bump" in paused.stderr and count() == 0
    approved = huddle("approve", "n1", "--team", "outer.yaml")
    assert approved.returncode == 0, approved.stderr
    assert count() == 1 and "counter is 1 (hello)" in approved.stdout and "## sibling" in approved.stdout
    assert asked(project, "sibling") == 1


def test_a_nested_approve_killed_while_the_tool_runs_never_runs_it_twice(project: ScriptedServer) -> None:
    Path("approval_tools.py").write_text(SLOW_TOOL)
    PLANNED[0] = plan("slow_bump")
    Path("gate.yaml").write_text(team_yaml("slow_bump"))
    Path("outer.yaml").write_text(PARALLEL)
    assert huddle("run", "bump the counter", "--team", "outer.yaml", "--session", "n2").returncode == 3
    Path("sleep.txt").write_text("60")
    approving = popen("approve", "n2", "--team", "outer.yaml")
    wait_for(Path("started.txt"))
    os.kill(approving.pid, signal.SIGKILL)
    approving.wait(timeout=30)
    Path("sleep.txt").write_text("0")
    again = huddle("approve", "n2", "--team", "outer.yaml")
    assert again.returncode == 0, again.stderr
    assert count() == 1 and "interrupted" in again.stdout and "## sibling" in again.stdout
    assert asked(project, "sibling") == 1


HIERARCHICAL = """team: {name: office, kind: hierarchical}
manager: {name: boss, instruction: You run the office.}
agents:
  - {name: sibling, instruction: Say something., description: says things}
  - {name: desk, team: gate.yaml, description: bumps counters}
"""
DELEGATION = json.dumps(
    {"assignments": [{"worker": "sibling", "task": "say hi"}, {"worker": "desk", "task": "bump the counter"}]}
)


def boss(request: RecordedRequest) -> Reply:
    """The manager delegates, then answers from its workers' results."""
    return echo(request) if "workers' results" in request.last_text else Reply(content=DELEGATION)


def test_a_worker_team_of_a_hierarchical_team_pauses_and_resumes_in_place(project: ScriptedServer) -> None:
    Path("gate.yaml").write_text(team_yaml())
    project.add_rule(Rule(agent="boss", reply=boss))

    async def main() -> None:
        async with load(project, HIERARCHICAL) as team:
            result = await team.run("bump it and say hi")
            [call] = result.pending
            assert call.path == ["desk"] and (asked(project, "boss"), asked(project, "sibling")) == (1, 1)
            done = await team.resume({call.id: ApprovalDecision.approve()})
            assert count() == 1 and "counter is 1 (hello)" in done.answer and "## sibling" in done.answer
            assert (asked(project, "boss"), asked(project, "sibling")) == (2, 1)  # no second delegation

    asyncio.run(main())


EVENTS = """team: {name: board, kind: event_driven}
agents:
  - {name: sibling, instruction: Say something., subscribe: [task]}
  - {name: desk, team: gate.yaml, subscribe: [task], publish: [bumped]}
  - {name: responder, instruction: Report it., subscribe: [bumped]}
"""


def test_a_nested_team_of_an_event_driven_team_pauses_and_resumes_in_place(project: ScriptedServer) -> None:
    Path("gate.yaml").write_text(team_yaml())

    async def main() -> None:
        async with load(project, EVENTS) as team:
            result = await team.run("bump the counter")
            [call] = result.pending
            assert call.path == ["desk"] and asked(project, "sibling") == 1 and count() == 0
            responders = asked(project, "responder")
            done = await team.resume({call.id: ApprovalDecision.approve()})
            assert count() == 1 and "counter is 1 (hello)" in done.answer and done.pending == []
            assert asked(project, "sibling") == 1  # not handed the task again
            assert asked(project, "responder") == responders + 2  # the chat's answer, then the reporter on bumped

    asyncio.run(main())


def test_an_event_for_a_paused_member_waits_for_its_resume(project: ScriptedServer) -> None:
    """desk gets a second event (sibling's output) while its conversation waits for approval: the event waits, and
    after the resume desk handles it (which asks for approval again: a second pause, a second bump)."""
    Path("gate.yaml").write_text(team_yaml())
    yaml = EVENTS.replace(
        "{name: sibling, instruction: Say something., subscribe: [task]}",
        "{name: sibling, instruction: Say something., subscribe: [task], publish: [again]}",
    )
    yaml = yaml.replace("subscribe: [task], publish: [bumped]", "subscribe: [task, again], publish: [bumped]")

    async def main() -> None:
        async with load(project, yaml) as team:
            first = await team.run("bump the counter")
            [call] = first.pending
            second = await team.resume({call.id: ApprovalDecision.approve()})
            [again] = second.pending
            assert again.id != call.id and again.path == ["desk"] and count() == 1
            done = await team.resume({again.id: ApprovalDecision.approve()})
            assert count() == 2 and done.pending == [] and "counter is 2" in done.answer
            assert asked(project, "sibling") == 1

    asyncio.run(main())
