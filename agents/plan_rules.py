"""Tool steps a task makes evident without a model: arithmetic in the text, questions about the date or time.

Small local models plan poorly (DESIGN.md: chance level at choosing tools), so the planner adds these steps when the
model's plan has no tool step of its own. Each rule is deliberately narrow: a false positive costs a tool call, not
a model call, and the responder still decides what to say.
"""

from __future__ import annotations

import json
import re

from huddle.agents.plan import PlanStep

_TIMES, _DIVIDE = "\u00d7", "\u00f7"  # the multiplication and division signs people type
_ARITHMETIC = re.compile(
    rf"(?<![\w.])\(?\d+(?:\.\d+)?(?:\s*(?:\*\*|[-+*/%^x{_TIMES}{_DIVIDE}])\s*\(?\d+(?:\.\d+)?\)?)+"
)
_TIME_WORDS = re.compile(r"\b(current|this) (year|month|date|time|day)\b|\btoday\b|\bwhat time\b|\bwhat day\b", re.I)


def evident_tool_steps(task: str, executor: str, tools: list[str]) -> list[PlanStep]:
    """Calculator steps for arithmetic expressions and a clock step for date/time questions, if those tools exist."""
    steps: list[PlanStep] = []
    if "calculator" in tools:
        for match in _ARITHMETIC.finditer(task):
            expression = match.group(0).replace(_TIMES, "*").replace(_DIVIDE, "/").replace("^", "**").replace("x", "*")
            if any(op in expression for op in "+-*/%"):
                steps.append(_step(len(steps) + 1, executor, "calculator", {"expression": expression.strip()}))
    if "clock" in tools and _TIME_WORDS.search(task):
        steps.append(_step(len(steps) + 1, executor, "clock", {}))
    return steps


def _step(number: int, executor: str, tool: str, args: dict[str, str]) -> PlanStep:
    return PlanStep(
        id=number, assignee=executor, instruction=f"Run {tool} for the task.", tool=tool, args=json.dumps(args)
    )
