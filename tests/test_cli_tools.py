"""``huddle tools --team`` lists the members of a team of any kind (it read every file as a group chat, and called a
valid parallel team six errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PATTERNS = Path(__file__).resolve().parents[1] / "examples" / "patterns"


def _tools(team: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "huddle", "tools", "--team", team, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def _names(rows: list[dict[str, Any]]) -> list[str]:
    return [name for row in rows for name in (row["name"], *_names(row.get("members", [])))]


@pytest.mark.parametrize(
    ("file", "kind", "expected"),
    [
        ("parallel.yaml", "parallel", ["editor", "security", "clarity", "audience"]),
        ("sequential.yaml", "sequential", ["outliner", "writer", "editor"]),
        ("hierarchical.yaml", "hierarchical", ["lead", "billing", "planner", "tool_executor", "responder"]),
        ("event_driven.yaml", "event_driven", ["fraud_check", "inventory", "billing", "notifier", "support"]),
    ],
)
def test_every_team_kind_lists_its_members(file: str, kind: str, expected: list[str]) -> None:
    report = _tools(str(PATTERNS / file))
    assert report["kind"] == kind
    assert _names(report["agents"])[: len(expected)] == expected


def test_a_nested_group_chat_shows_its_tools() -> None:
    billing = next(a for a in _tools(str(PATTERNS / "hierarchical.yaml"))["agents"] if a["name"] == "billing")
    executor = next(m for m in billing["members"] if m["name"] == "tool_executor")
    assert [t["name"] for t in executor["tools"]] == ["calculator"]
    assert billing["kind"] == "team billing"
