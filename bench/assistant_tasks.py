"""The assistant task set the benchmarks share, and a scripted server that answers every agent of it the same way.

Both `tokens_vs_autogen.py` and `faults.py` import this (run them as ``python bench/<name>.py``). The server's rules
read the task out of each request, so vanilla autogen and huddle get identical answers from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from huddle.teams.spec import TeamSpec
from huddle.testing import RecordedRequest, Reply, Rule, ToolCall


@dataclass(frozen=True)
class Task:
    text: str
    calls: tuple[tuple[str, dict[str, str]], ...]  # the tool calls the task needs
    answer: str


TASKS = (
    Task("What is 17*23 plus 1000?", (("calculator", {"expression": "17*23+1000"}),), "17*23 + 1000 = 1391."),
    Task("How many minutes are in 7 weeks?", (("calculator", {"expression": "7*7*24*60"}),), "70560 minutes."),
    Task(
        "What year is it, and what is 2**10?",
        (("clock", {}), ("calculator", {"expression": "2**10"})),
        "It is the current year, and 2**10 = 1024.",
    ),
    Task("Give me three tips for writing clear emails.", (), "1. Lead with the ask. 2. Keep it short. 3. Proofread."),
    Task("Split a 250 euro bill between 4 people.", (("calculator", {"expression": "250/4"}),), "62.50 euro each."),
)
TEAM = TeamSpec.model_validate(
    {
        "team": {"name": "assistant", "max_turns": 12},
        "agents": [
            {"role": "planner"},
            {"role": "tool_executor", "tools": ["calculator", "clock"]},
            {"role": "memory", "optional": True},
            {"role": "responder"},
        ],
    }
)
NAMES = [a.agent_name for a in TEAM.agents]


def task_of(request: RecordedRequest) -> Task:
    text = json.dumps(request.messages)
    return next(t for t in TASKS if t.text in text)


def plan_for(request: RecordedRequest) -> Reply:
    task = task_of(request)
    steps = [
        {
            "id": i,
            "assignee": "tool_executor",
            "instruction": f"run {name}",
            "tool": name,
            "args": json.dumps(args),
            "depends_on": [],
        }
        for i, (name, args) in enumerate(task.calls, start=1)
    ]
    return Reply(content=json.dumps({"goal": task.text, "steps": steps, "done": not steps}))


def tool_calls_for(request: RecordedRequest) -> Reply:
    if request.last_role == "tool":
        return Reply(content="Tool results are above.")
    calls = task_of(request).calls
    return Reply(tool_calls=[ToolCall(name=n, arguments=a) for n, a in calls]) if calls else Reply(content="No tool.")


def next_speaker(request: RecordedRequest) -> Reply:
    """A well-behaved selector model: user -> memory -> planner -> tool_executor (if needed) -> responder."""
    history = request.system_text + " ".join(str(m.get("content")) for m in request.messages)
    spoken = re.findall(rf"^({'|'.join(NAMES)}|user):", history, flags=re.M)
    last = spoken[-1] if spoken else "user"
    needs_tools = bool(task_of(request).calls)
    order = {"user": "memory", "memory": "planner", "planner": "tool_executor" if needs_tools else "responder"}
    return Reply(content=order.get(last, "responder"))


def server_rules() -> list[Rule]:
    return [
        Rule(agent="manager", reply=next_speaker),
        Rule(agent="planner", reply=plan_for),
        Rule(agent="tool_executor", reply=tool_calls_for),
        Rule(agent="memory", reply=Reply(content="Nothing relevant in memory.")),
        Rule(agent="responder", reply=lambda r: Reply(content=task_of(r).answer)),
    ]
