"""Custom tool agents and tools: by entry point and by module:attr, allowlists, timeouts, the opt-in shell tool."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from huddle.config.settings import Settings, load_settings
from huddle.errors import ConfigError
from huddle.teams.group_chat import GroupChatTeam, Members
from huddle.teams.spec import TeamSpec
from huddle.testing import Reply, Rule, ScriptedServer, ToolCall

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom_tool_agent"


@pytest.fixture(autouse=True)
def example_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))


@pytest.fixture
def entry_points_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the example's entry points the way pip would: a dist-info folder on sys.path."""
    dist = tmp_path / "site" / "huddle_inventory_example-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: huddle-inventory-example\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(
        "[huddle.agents]\ninventory = inventory_agent:InventoryAgent\n\n"
        "[huddle.tools]\nsku_info = inventory_agent:sku_info\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


@pytest.fixture
def settings(server: ScriptedServer, tmp_path: Path) -> Settings:
    (tmp_path / "huddle.yaml").write_text(f"models:\n  default: {{model: scripted, base_url: '{server.base_url}'}}\n")
    return load_settings()


def team(use: str, executor_tools: list[str] | None = None) -> TeamSpec:
    agents: list[dict[str, object]] = [
        {"role": "planner"},
        {"use": use, "name": "inventory", "config": {"warehouse": "us-1"}},
    ]
    if executor_tools is not None:
        agents.append({"role": "tool_executor", "tools": executor_tools})
    agents.append({"role": "responder"})
    return TeamSpec.model_validate({"team": {"name": "desk"}, "agents": agents})


def plan(assignee: str, tool: str, args: dict[str, object]) -> str:
    step = {
        "id": 1,
        "assignee": assignee,
        "instruction": "check",
        "tool": tool,
        "args": json.dumps(args),
        "depends_on": [],
    }
    return json.dumps({"goal": "stock", "steps": [step], "done": False})


@pytest.mark.parametrize("use", ["inventory_agent:InventoryAgent", "inventory"], ids=["module-attr", "entry-point"])
async def test_custom_tool_agent_runs_in_a_team(
    server: ScriptedServer, settings: Settings, use: str, entry_points_installed: None
) -> None:
    server.add_rule(Rule(agent="planner", reply=Reply(content=plan("inventory", "check_stock", {"sku": "B-200"}))))
    server.add_rule(Rule(agent="responder", reply=lambda r: Reply(content="seen: " + json.dumps(r.messages)[-400:])))
    chat = GroupChatTeam(team(use), settings)
    result = await chat.run("How many B-200 are in stock?")
    await chat.close()
    assert [d.speaker for d in result.decisions] == ["planner", "inventory", "responder"]
    assert '"in_stock": 12' in result.messages[2].content  # us-1 from the YAML config, no model call
    assert "inventory" not in result.usage.by_agent
    planner_prompt = json.dumps(server.chat_requests[0].messages)
    assert "warehouse us-1" in planner_prompt and "inventory runs check_stock" in planner_prompt


def test_entry_point_tools_join_an_allowlist_and_huddle_tools_lists_them(entry_points_installed: None) -> None:
    members = Members.resolve(team("inventory", executor_tools=["calculator", "sku_info"]), Path("ws"))
    assert members.toolsets["tool_executor"].names() == ["calculator", "sku_info"]
    assert members.toolsets["inventory"].names() == ["check_stock", "reorder", "sku_info"]
    assert members.roster["inventory"] == "Checks stock levels and places reorders in warehouse us-1."


def test_cli_lists_a_yaml_teams_tools(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "huddle", "tools", "--team", str(EXAMPLE / "inventory.yaml"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(EXAMPLE)},
    )
    # The YAML names the entry point `inventory`, which is not installed in this test's interpreter.
    assert proc.returncode == 2 and "installed huddle.agents entry point" in proc.stderr
    yaml_text = (
        (EXAMPLE / "inventory.yaml").read_text().replace("use: inventory,", 'use: "inventory_agent:InventoryAgent",')
    )
    yaml_text = yaml_text.replace("sku_info]", '"inventory_agent:sku_info"]')
    (tmp_path / "t.yaml").write_text(yaml_text)
    proc = subprocess.run(
        [sys.executable, "-m", "huddle", "tools", "--team", "t.yaml", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(EXAMPLE)},
    )
    assert proc.returncode == 0, proc.stderr
    agents = {a["name"]: a for a in json.loads(proc.stdout)["agents"]}
    assert [t["name"] for t in agents["inventory"]["tools"]] == ["check_stock", "reorder", "sku_info"]
    assert agents["inventory"]["tools"][1]["parameters"]["required"] == ["sku", "quantity"]


async def test_a_tool_off_the_allowlist_is_refused_and_recorded(
    server: ScriptedServer, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    spec = TeamSpec.model_validate(
        {"team": {"name": "t"}, "agents": [{"role": "tool_executor", "tools": ["calculator"]}, {"role": "responder"}]}
    )
    server.add_rule(Rule(agent="manager", reply=Reply(content="tool_executor")))
    server.add_rule(
        Rule(
            agent="tool_executor",
            reply=Reply(tool_calls=[ToolCall(name="write_note", arguments={"name": "x", "text": "y"})]),
        )
    )
    server.add_rule(Rule(agent="responder", reply=Reply(content="could not")))
    chat = GroupChatTeam(spec, settings)
    with caplog.at_level(logging.WARNING, logger="huddle.tools"):
        result = await chat.run("save a note")
    await chat.close()
    assert "'write_note' is not on tool_executor's allowlist (calculator)" in result.messages[1].content
    assert any("refused tool 'write_note'" in r.message for r in caplog.records)
    assert not (chat.workspace / "x").exists()
    assert result.answer == "could not"


async def test_a_tool_past_its_timeout_errors_and_the_run_completes(
    server: ScriptedServer, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "slow_tools.py").write_text(
        "import time\nfrom huddle.tools import tool\n\n"
        '@tool(timeout_s=0.2)\ndef nap(seconds: float) -> str:\n    """Sleep."""\n'
        "    time.sleep(seconds)\n    return 'rested'\n"
    )
    spec = TeamSpec.model_validate(
        {
            "team": {"name": "t"},
            "agents": [
                {"role": "planner"},
                {"role": "tool_executor", "tools": ["slow_tools:nap"]},
                {"role": "responder"},
            ],
        }
    )
    sys.path.insert(0, str(tmp_path))
    try:
        server.add_rule(Rule(agent="planner", reply=Reply(content=plan("tool_executor", "nap", {"seconds": 2}))))
        server.add_rule(Rule(agent="responder", reply=Reply(content="the tool timed out")))
        chat = GroupChatTeam(spec, settings)
        result = await chat.run("take a nap")
        await chat.close()
    finally:
        sys.path.remove(str(tmp_path))
    assert '"error": "timeout"' in result.messages[2].content
    assert result.answer == "the tool timed out"


def test_shell_tool_only_when_enabled_and_runs_in_the_workspace(tmp_path: Path) -> None:
    spec = {
        "team": {"name": "t"},
        "agents": [{"role": "tool_executor", "tools": ["run_command"]}, {"role": "responder"}],
    }
    with pytest.raises(ConfigError, match="run_command"):
        Members.resolve(TeamSpec.model_validate(spec), tmp_path)
    spec["team"] = {"name": "t", "shell": True}
    members = Members.resolve(TeamSpec.model_validate(spec), tmp_path / "ws")
    result = asyncio.run(
        members.toolsets["tool_executor"]
        .get("run_command")
        .run({"command": f'{sys.executable} -c "import os; print(os.getcwd())"'})
    )
    assert result.ok and str(tmp_path / "ws") in result.content


def test_bad_custom_agent_references_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg'"):
        Members.resolve(team("no_such_pkg:Agent"), Path("ws"))
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        Members.resolve(team("inventory_agent:Nope"), Path("ws"))
    with pytest.raises(ConfigError, match="neither a 'module:attr' reference nor an installed"):
        Members.resolve(team("not-installed"), Path("ws"))
    bad_config = team("inventory_agent:InventoryAgent")
    bad_config.agents[1].config = {"warehouse": "mars"}
    with pytest.raises(ConfigError, match="unknown warehouse 'mars'"):
        Members.resolve(bad_config, Path("ws"))
