"""Plans the scripted planner returns in tests, written once."""

from __future__ import annotations

import json


def calculator_plan(expression: str = "17*23") -> str:
    """A planner reply with one calculator step for the tool executor."""
    step = {
        "id": 1,
        "assignee": "tool_executor",
        "instruction": "multiply",
        "tool": "calculator",
        "args": json.dumps({"expression": expression}),
        "depends_on": [],
    }
    return json.dumps({"goal": "multiply", "steps": [step], "done": False})
