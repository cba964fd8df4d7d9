"""Plans: sanitising what a model produced, and tool steps evident from the task itself."""

from __future__ import annotations

import json

from huddle.agents.plan import Plan, PlanStep
from huddle.agents.plan_rules import evident_tool_steps

ROSTER = {"planner": "p", "tool_executor": "t", "responder": "r"}


def test_sanitised_drops_unknown_agents_clears_bad_args_and_ends_with_the_responder() -> None:
    raw = Plan(
        goal="g",
        steps=[
            PlanStep(id=3, assignee="Bob", instruction="?"),
            PlanStep(id=4, assignee="tool_executor", instruction="x", tool="calculator", args='{"expression": "1+1"}'),
            PlanStep(
                id=5, assignee="tool_executor", instruction="y", tool="calculator", args="{not json", depends_on=[4]
            ),
            PlanStep(id=6, assignee="responder", instruction="answer"),
        ],
    )
    plan = raw.sanitised(ROSTER, "responder", lambda member, tool, args: "expression" in args)
    assert [(s.id, s.assignee, s.args, s.depends_on) for s in plan.steps] == [
        (1, "tool_executor", '{"expression": "1+1"}', []),
        (2, "tool_executor", None, [1]),
        (3, "responder", None, [1, 2]),
    ]
    assert "1. tool_executor: x [calculator(expression='1+1')]" in plan.describe()


def test_evident_steps_for_arithmetic_and_dates_only_when_the_tools_exist() -> None:
    steps = evident_tool_steps("What is 17*23 plus the current year?", "tool_executor", ["calculator", "clock"])
    assert [(s.tool, json.loads(s.args or "{}")) for s in steps] == [
        ("calculator", {"expression": "17*23"}),
        ("clock", {}),
    ]
    assert evident_tool_steps("What is 17*23?", "tool_executor", ["clock"]) == []
    assert evident_tool_steps("Give me 3 tips for order 1042", "tool_executor", ["calculator", "clock"]) == []
    assert json.loads(evident_tool_steps("2^10", "te", ["calculator"])[0].args or "")["expression"] == "2**10"


def expressions(task: str) -> list[str]:
    return [json.loads(s.args or "")["expression"] for s in evident_tool_steps(task, "te", ["calculator"])]


def test_arithmetic_in_words_reaches_the_calculator_whole() -> None:
    assert expressions("What is 17*23 plus 5?") == ["17*23 + 5"]
    assert expressions("what is 12 times 4 divided by 3") == ["12 * 4 / 3"]
    assert expressions("5 minus 2 to the power of 3") == ["5 - 2 ** 3"]


def test_dates_phone_and_order_numbers_are_not_arithmetic() -> None:
    for task in (
        "My order from 2024-05-01 has not arrived",
        "Call me on 555-1234",
        "Order #1042-7 is late",
        "Delivery is due 12/03",
        "Version 1.2.3 crashes",
    ):
        assert expressions(task) == [], task
    assert expressions("What is 100-37?") == ["100-37"]  # asked for a result, so it is a sum


def test_today_alone_is_not_a_question_about_time() -> None:
    def clock(task: str) -> bool:
        return bool(evident_tool_steps(task, "te", ["clock"]))

    assert not clock("How are you today?")
    assert not clock("Summarise my notes today")
    assert clock("What is the date today?") and clock("What day is it?") and clock("what time is it in Paris")
