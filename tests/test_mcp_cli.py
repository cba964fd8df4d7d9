"""``huddle tools --team FILE`` starts the team's MCP servers and lists their tools (it listed none of them); a server
that fails to start is one line of the listing and exit status 1, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_mcp_team import write_mcp_team


def huddle_tools(tmp_path: Path, mcp: str, *flags: str) -> subprocess.CompletedProcess[str]:
    team_file = write_mcp_team(tmp_path, mcp)
    return subprocess.run(
        [sys.executable, "-m", "huddle", "tools", "--team", str(team_file), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "HUDDLE_DATA_DIR": str(tmp_path / "data")},
    )


DEMO = (
    f'{{command: "{sys.executable}", args: [demo_server.py], env: {{PIDFILE: server.pid}}, name: demo, tools: [add]}}'
)
BROKEN = f'{{command: "{sys.executable}", args: [missing_server.py], name: broken, startup_timeout_s: 5}}'


def test_the_listing_starts_the_servers_and_shows_their_tools_with_schemas(tmp_path: Path) -> None:
    proc = huddle_tools(tmp_path, f"[{DEMO}]", "--json")
    assert proc.returncode == 0, proc.stderr
    executor = next(a for a in json.loads(proc.stdout)["agents"] if a["name"] == "tool_executor")
    assert [t["name"] for t in executor["tools"]] == ["calculator", "demo__add"]
    add = executor["tools"][1]
    assert add["description"] == "Add two integers." and add["parameters"]["required"] == ["a", "b"]
    assert executor["mcp"] == [
        {"server": f"'demo' ({sys.executable} demo_server.py)", "tools": ["demo__add"], "error": None}
    ]
    text = huddle_tools(tmp_path, f"[{DEMO}]")
    assert text.returncode == 0 and "demo__add(a: integer, b: integer) — Add two integers." in text.stdout


def test_a_server_that_fails_to_start_is_one_line_and_the_others_are_listed(tmp_path: Path) -> None:
    proc = huddle_tools(tmp_path, f"[{DEMO}, {BROKEN}]")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "demo__add(a: integer, b: integer)" in proc.stdout
    errors = [line.strip() for line in proc.stdout.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: MCP server 'broken' (")
    assert "failed to start" in errors[0] and "missing_server.py" in errors[0]
    report = json.loads(huddle_tools(tmp_path, f"[{DEMO}, {BROKEN}]", "--json").stdout)
    executor = next(a for a in report["agents"] if a["name"] == "tool_executor")
    assert [s["error"] is None for s in executor["mcp"]] == [True, False]
