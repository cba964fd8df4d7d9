"""The tool executor keeps every step's outcome: one step's failure neither discards the others' results nor makes a
write that already succeeded run again when the failed steps are rerouted; and what it posts stays bounded."""

from __future__ import annotations

import json
from typing import Any

from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken
from autogen_ext.models.replay import ReplayChatCompletionClient

from huddle.agents.guard import GuardedAgent
from huddle.agents.plan import Plan, PlanStep
from huddle.agents.state import RunState
from huddle.agents.tool_executor import ToolExecutorAgent
from huddle.tools import ToolRegistry, tool


class _Broken(ReplayChatCompletionClient):
    """A model whose every call fails for good (retries and fallbacks spent)."""

    async def create(self, *args: object, **kwargs: object) -> Any:  # type: ignore[override]
        raise ConnectionError("model server down")


def _plan(*steps: PlanStep) -> Plan:
    return Plan(goal="g", steps=[*steps, PlanStep(id=len(steps) + 1, assignee="responder", instruction="answer")])


async def test_one_failing_step_keeps_the_others_and_a_write_never_repeats() -> None:
    writes: list[str] = []

    @tool(side_effects="write")
    def save(text: str) -> str:
        """Save a text.

        Args:
            text: What to save.
        """
        writes.append(text)
        return "saved"

    state = RunState(task="save and look")
    state.set_plan(
        _plan(
            PlanStep(id=1, assignee="tools", instruction="save it", tool="save", args='{"text": "a"}'),
            PlanStep(id=2, assignee="tools", instruction="look something up"),  # needs the (broken) model
        )
    )
    client = _Broken([])
    client._model_info["function_calling"] = True
    executor = GuardedAgent(ToolExecutorAgent("tools", "runs tools", client, state, tools=ToolRegistry([save])), state)

    response = await executor.on_messages([TextMessage(source="user", content="go")], CancellationToken())

    text = response.chat_message.to_text()
    assert response.chat_message.metadata["kind"] == "tool_result"  # not one failure for the whole turn
    assert "Step 1: save(text='a') -> saved" in text and "Step 2" in text and "ConnectionError" in text
    assert (state.status[1], state.status[2]) == ("done", "failed")
    assert state.reassign("tools", "backup") == [2]  # only the failed step moves; the write stays done
    assert writes == ["a"]


async def test_long_arguments_are_cut_in_what_the_executor_posts() -> None:
    @tool
    def echo_length(text: str) -> int:
        """Count characters.

        Args:
            text: The text.
        """
        return len(text)

    huge = "x" * 2_000_000
    state = RunState(task="count")
    args = json.dumps({"text": huge})
    state.set_plan(
        _plan(
            PlanStep.model_construct(
                id=1, assignee="tools", instruction="count", tool="echo_length", args=args, depends_on=[]
            )
        )
    )
    executor = ToolExecutorAgent("tools", "runs tools", _Broken([]), state, tools=ToolRegistry([echo_length]))

    message = (await executor.on_messages([], CancellationToken())).chat_message

    assert len(message.to_text()) < 1_000 and "more characters cut]" in message.to_text()
    assert "-> 2000000" in message.to_text()  # the tool itself got the whole argument
    assert len(message.metadata["calls"]) + len(message.metadata["findings"]) < 2_000
