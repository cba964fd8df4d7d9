"""MCP servers declared in a team YAML: their tools reach the tool executor and run from a plan with no model call;
our own test server, and the reference servers installed from the package index (mcp-server-time, mcp-server-git)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from huddle.config.settings import load_settings
from huddle.teams.base import RunResult
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.spec import load_team
from huddle.testing import RecordedRequest, Reply, ReplyLike, Rule, ScriptedServer
from tests.commands import console_script
from tests.test_mcp import SERVER

FORTY_TWO = Reply(content="42")


def step(step_id: int, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """One plan step for the tool executor, its arguments given (so it runs with no model call)."""
    return {
        "id": step_id,
        "assignee": "tool_executor",
        "instruction": tool,
        "tool": tool,
        "args": json.dumps(args),
        "depends_on": [],
    }


def write_mcp_team(folder: Path, mcp: str) -> Path:
    """A planner / tool executor / responder team file with `mcp` (a YAML flow list), our test server beside it.

    The executor runs its calls without asking (`approval: never`): an MCP tool that does not say it only reads is
    `external`, which asks by default, and these tests are about what MCP calls return (tests/test_approvals.py
    covers the policy). It always plans (`plan: always`): whether the vague test task "use the tools" needs a tool
    is the direct route's judgement, a near tie that flipped on a fresh install (numpy 2.4.6, onnxruntime 1.32.0)."""
    folder.mkdir(exist_ok=True)
    (folder / "demo_server.py").write_text(SERVER)
    team_file = folder / "team.yaml"
    team_file.write_text(
        f"""
team:
  name: mcp-desk
  plan: always
  mcp: {mcp}
agents:
  - {{role: planner}}
  - {{role: tool_executor, tools: [calculator], approval: never}}
  - {{role: responder}}
"""
    )
    return team_file


async def run_plan(
    tmp_path: Path, mcp: str, steps: list[dict[str, Any]], answer: ReplyLike = FORTY_TWO
) -> tuple[RunResult, list[RecordedRequest]]:
    """Run a planner / tool executor / responder team with `mcp` (a YAML flow list) whose scripted planner returns
    `steps`; the result and the model requests."""
    team_file = write_mcp_team(tmp_path / "teams", mcp)
    plan = {"goal": "use the tools", "done": False, "steps": steps}
    with ScriptedServer(
        rules=[Rule(agent="planner", reply=Reply(content=json.dumps(plan))), Rule(reply=answer)]
    ) as server:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{server.base_url}'}}\n"
        )
        team = GroupChatTeam(load_team(team_file), load_settings())
        try:
            result = await team.run("use the tools")
        finally:
            await team.close()
        return result, list(server.chat_requests)


DEMO = f'[{{command: "{sys.executable}", args: [demo_server.py], env: {{PIDFILE: server.pid}}, tools: [add, refuse]}}]'


async def test_team_yaml_mcp_tools_run_in_a_plan(tmp_path: Path) -> None:
    result, requests = await run_plan(tmp_path, DEMO, [step(1, "add", {"a": 40, "b": 2})])
    planner_prompt = json.dumps(requests[0].messages)
    assert "Step 1: add(a=40, b=2) -> 42" in result.messages[2].content
    assert "tool_executor runs add" in planner_prompt and "shout" not in planner_prompt  # the allowlist holds
    assert "tool_executor" not in result.usage.by_agent  # run from the plan, no model call


async def test_an_error_result_is_recorded_as_a_failed_step(tmp_path: Path) -> None:
    # The server answers with is_error set and "Error: ..." text (as mcp-server-sqlite does): a failed call, not ok.
    result, requests = await run_plan(tmp_path, DEMO, [step(1, "refuse", {"query": "DELETE FROM users"})])
    executed = result.messages[2]
    assert "Step 1: refuse(query='DELETE FROM users') -> ERROR" in executed.content
    assert "Error: Only SELECT queries are allowed" in executed.content
    responder_prompt = json.dumps(requests[-1].messages)
    assert "refuse failed: McpToolError: Error: Only SELECT queries are allowed" in responder_prompt


def echo_findings(request: RecordedRequest) -> Reply:
    """The responder's answer: the Tokyo time and the commit message it was shown, so the test sees they reached it."""
    prompt = json.dumps(request.messages)
    tokyo = re.search(r"T(\d\d:\d\d):00\+09:00", prompt)
    commit = re.search(r"Message: ([^\\]+)", prompt)
    return Reply(content=f"Tokyo: {tokyo and tokyo.group(1)}; last commit: {commit and commit.group(1)}")


async def test_a_plan_calls_the_reference_servers_from_the_package_index(tmp_path: Path) -> None:
    time_server = console_script("mcp-server-time", "the dev extra: pip install -e '.[dev,mcp]'")
    git_server = console_script("mcp-server-git", "the dev extra: pip install -e '.[dev,mcp]'")
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "README").write_text("hello\n")
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "Add the README"], check=True)
    servers = (
        f'[{{command: "{time_server}", args: [--local-timezone, UTC], name: time, tools: [convert_time]}}, '
        f'{{command: "{git_server}", args: [--repository, "{repo}"], name: git, tools: [git_log]}}]'
    )
    steps = [
        step(1, "time__convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}),
        step(2, "git__git_log", {"repo_path": str(repo), "max_count": 1}),
    ]
    result, _ = await run_plan(tmp_path, servers, steps, answer=echo_findings)
    executed = result.messages[2]
    assert "Step 1: time__convert_time(" in executed.content and "Step 2: git__git_log(" in executed.content
    assert "ERROR" not in executed.content
    assert result.messages[-1].content == "Tokyo: 21:00; last commit: Add the README"
