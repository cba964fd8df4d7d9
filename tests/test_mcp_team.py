"""An MCP server declared in a team YAML: its tools reach the tool executor and run from a plan with no model call."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="the mcp extra: pip install -e '.[mcp]'")

from huddle.config.settings import load_settings
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.spec import load_team
from huddle.testing import Reply, Rule, ScriptedServer
from tests.test_mcp import SERVER


async def test_team_yaml_mcp_tools_run_in_a_plan(tmp_path: Path) -> None:
    (tmp_path / "teams").mkdir()
    (tmp_path / "teams" / "demo_server.py").write_text(SERVER)
    (tmp_path / "teams" / "team.yaml").write_text(
        f"""
team:
  name: mcp-desk
  mcp: [{{command: "{sys.executable}", args: [demo_server.py], env: {{PIDFILE: server.pid}}, tools: [add]}}]
agents:
  - {{role: planner}}
  - {{role: tool_executor, tools: [calculator]}}
  - {{role: responder}}
"""
    )
    plan = {
        "goal": "add",
        "done": False,
        "steps": [
            {
                "id": 1,
                "assignee": "tool_executor",
                "instruction": "add",
                "tool": "add",
                "args": json.dumps({"a": 40, "b": 2}),
                "depends_on": [],
            }
        ],
    }
    with ScriptedServer(
        rules=[Rule(agent="planner", reply=Reply(content=json.dumps(plan))), Rule(reply=Reply(content="42"))]
    ) as server:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{server.base_url}'}}\n"
        )
        team = GroupChatTeam(load_team(tmp_path / "teams" / "team.yaml"), load_settings())
        try:
            result = await team.run("add forty and two")
            planner_prompt = json.dumps(server.chat_requests[0].messages)
        finally:
            await team.close()
    assert "Step 1: add(a=40, b=2) -> 42" in result.messages[2].content
    assert "tool_executor runs add" in planner_prompt and "shout" not in planner_prompt  # the allowlist holds
    assert "tool_executor" not in result.usage.by_agent  # run from the plan, no model call
