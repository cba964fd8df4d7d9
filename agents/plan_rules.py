"""Tool steps a task makes evident without a model: arithmetic in the text, questions about the date or time.

Small local models plan poorly (DESIGN.md: chance level at choosing tools), so the planner adds these steps when the
model's plan has no tool step of its own. Each rule is deliberately narrow: a false positive costs a tool call and
puts a wrong "fact" in front of the responder, so numbers that are not arithmetic (dates, phone and order numbers)
and the word "today" outside a question about time never fire.
"""

from __future__ import annotations

import json
import re

from huddle.agents.plan import PlanStep

_TIMES, _DIVIDE = "\u00d7", "\u00f7"  # the multiplication and division signs people type
_NUMBER = r"\(?\d+(?:\.\d+)?\)?"
_ARITHMETIC = re.compile(rf"(?<![\w.#-]){_NUMBER}(?:\s*(?:\*\*|[-+*/%^x{_TIMES}{_DIVIDE}])\s*{_NUMBER})+(?![\w-])")
# Operators in words, between two numbers: "17*23 plus 5" reaches the calculator as "17*23 + 5", not "17*23".
_WORD_OPERATORS = {
    "plus": "+",
    "minus": "-",
    "times": "*",
    "multiplied by": "*",
    "divided by": "/",
    "to the power of": "**",
    "modulo": "%",
    "mod": "%",
}
_IN_WORDS = re.compile(
    rf"(?<=[\d)])\s+({'|'.join(sorted(map(re.escape, _WORD_OPERATORS), key=len, reverse=True))})\s+(?=[\d(])", re.I
)
# "2024-05-01", "555-1234", "12/03": digits joined by - or / with no spaces are dates and numbers, not sums. Two such
# joins are always a date; one counts as arithmetic only when the task asks for a result ("what is 100-37?").
_DATE = re.compile(r"^\d+(?:[-/]\d+){2,}$")
_JOINED = re.compile(r"^\d+[-/]\d+$")
_ASKS_RESULT = re.compile(r"\b(?:what(?:'s| is)|calculate|compute|how much|solve|evaluate)\b|=", re.I)
_TIME_QUESTION = re.compile(
    r"\bwhat(?:'s| is)?\s+(?:the\s+)?(?:current\s+)?(?:time|date|day|year|month)\b"
    r"|\bwhat (?:time|day|year|month) is it\b|\bwhich day\b|\bday of the week\b"
    r"|\b(?:current|today's|todays)\s+(?:year|month|date|time|day)\b",
    re.I,
)


# A number and a word asking for a computed quantity: "how many minutes are in 7 weeks", "split 250 between 4",
# "19 percent of 250". No expression can be read off such a task, but the calculator is what answers it.
_QUANTITY_CUE = re.compile(
    r"\bhow (?:many|much|long)\b|\b(?:split|divide|share|total|sum|average|percent|percentage|convert|per|each)\b|%",
    re.I,
)
_HAS_NUMBER = re.compile(r"\d")


def asks_for_a_quantity(task: str) -> bool:
    """Whether the task gives a number and asks for a quantity computed from it (a calculator question in words)."""
    return _HAS_NUMBER.search(task) is not None and _QUANTITY_CUE.search(task) is not None


def arithmetic_expressions(task: str) -> list[str]:
    """The arithmetic in `task`, as calculator expressions, operators in words included."""
    text = _IN_WORDS.sub(lambda m: f" {_WORD_OPERATORS[m.group(1).lower()]} ", task)
    found = []
    for match in _ARITHMETIC.finditer(text):
        raw = match.group(0).strip()
        if _DATE.match(raw) or (_JOINED.match(raw) and not _ASKS_RESULT.search(task)):
            continue
        expression = raw.replace(_TIMES, "*").replace(_DIVIDE, "/").replace("^", "**").replace("x", "*")
        if any(op in expression for op in "+-*/%"):
            found.append(expression)
    return found


def asks_about_time(task: str) -> bool:
    """Whether the task asks for the date, the day or the time (not merely says "today")."""
    return _TIME_QUESTION.search(task) is not None


def evident_tool_steps(task: str, executor: str, tools: list[str]) -> list[PlanStep]:
    """Calculator steps for arithmetic expressions and a clock step for date/time questions, if those tools exist."""
    steps: list[PlanStep] = []
    if "calculator" in tools:
        for expression in arithmetic_expressions(task):
            steps.append(_step(len(steps) + 1, executor, "calculator", {"expression": expression}))
    if "clock" in tools and asks_about_time(task):
        steps.append(_step(len(steps) + 1, executor, "clock", {}))
    return steps


def _step(number: int, executor: str, tool: str, args: dict[str, str]) -> PlanStep:
    return PlanStep(
        id=number, assignee=executor, instruction=f"Run {tool} for the task.", tool=tool, args=json.dumps(args)
    )
