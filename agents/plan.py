"""The planner's contract: a `Plan` of steps, each with an assignee, an instruction and, when known, a tool call.

Every string is bounded (``max_length``) and the step count is capped, so the same schema can constrain a small local
model's output grammar without letting it generate unbounded garbage. `Plan.sanitised` turns whatever a model
produced into a plan the team can execute: unknown assignees are dropped, tool arguments that do not validate are
cleared (the tool executor then asks its model), and the plan always ends with the responder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

StepStatus = Literal["pending", "done", "failed"]
MAX_STEPS = 6


class PlanStep(BaseModel):
    """One unit of work for one agent."""

    id: int = Field(ge=1, le=99)
    assignee: str = Field(max_length=40, description="The agent that does this step.")
    instruction: str = Field(max_length=200, description="What the agent should do, in one sentence.")
    tool: str | None = Field(None, max_length=40, description="For the tool executor: the tool to call.")
    # A JSON object in a string, not a dict: OpenAI's strict structured output rejects free-form objects.
    args: str | None = Field(
        None, max_length=300, description='The tool arguments as a JSON object, e.g. {"expression": "17*23"}.'
    )
    depends_on: list[int] = Field(default_factory=list, max_length=MAX_STEPS)

    def arguments(self) -> dict[str, Any] | None:
        """The parsed tool arguments, or None when absent or not a JSON object."""
        if not self.args:
            return None
        try:
            parsed = json.loads(self.args)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None


class Plan(BaseModel):
    """What the team will do for the task; ``done`` means no steps are needed before answering."""

    goal: str = Field(max_length=200)
    steps: list[PlanStep] = Field(default_factory=list, max_length=MAX_STEPS)
    done: bool = False

    def sanitised(
        self,
        roster: Mapping[str, str],
        responder: str,
        validate_tool_call: Callable[[str, str, Mapping[str, Any]], bool],
    ) -> Plan:
        """A copy that only uses known agents and tools, with numbered steps, ending with the responder.

        `validate_tool_call(assignee, tool, args)` says whether the assignee can run that call as given; when it
        cannot, the arguments are cleared and the assignee will ask its model.
        """
        steps: list[PlanStep] = []
        for step in self.steps:
            if step.assignee not in roster or step.assignee == responder:
                continue
            if step.tool:
                args = step.arguments()
                if args is None or not validate_tool_call(step.assignee, step.tool, args):
                    step = step.model_copy(update={"args": None})
            steps.append(step)
        steps = steps[: MAX_STEPS - 1]
        renumber = {old.id: new for new, old in enumerate(steps, start=1)}
        fixed = [
            s.model_copy(
                update={"id": renumber[s.id], "depends_on": [renumber[d] for d in s.depends_on if d in renumber]}
            )
            for s in steps
        ]
        fixed.append(
            PlanStep(
                id=len(fixed) + 1,
                assignee=responder,
                instruction="Answer the user.",
                depends_on=[s.id for s in fixed],
            )
        )
        return Plan(goal=self.goal, steps=fixed, done=self.done)

    def describe(self) -> str:
        """The plan as short numbered lines, for the conversation and for prompts."""
        lines = [f"Plan: {self.goal}"]
        for step in self.steps:
            call = f" [{step.tool}({_format_args(step.arguments())})]" if step.tool else ""
            after = f" (after {', '.join(map(str, step.depends_on))})" if step.depends_on else ""
            lines.append(f"{step.id}. {step.assignee}: {step.instruction}{call}{after}")
        return "\n".join(lines)


def fallback_plan(task: str, responder: str) -> Plan:
    """The plan used when the planner's output cannot be used: answer directly."""
    return Plan(goal=task[:200], steps=[PlanStep(id=1, assignee=responder, instruction="Answer the user.")])


def _format_args(args: Mapping[str, Any] | None) -> str:
    return "" if not args else ", ".join(f"{k}={v!r}" for k, v in args.items())
