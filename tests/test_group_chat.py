"""The managed group chat end to end, over real HTTP to the scripted server.

Checks what a user would notice: who spoke and why, that plan-given tool calls cost no model call, that the manager's
model is only consulted when nothing cheaper knows the answer, that invalid speaker names never stall or livelock a
run, and that tool failures come back into the conversation instead of crashing it.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from huddle.config.settings import Settings, load_settings
from huddle.errors import HuddleError
from huddle.teams.base import RunResult
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.spec import TeamSpec
from huddle.testing import RecordedRequest, Reply, Rule, ScriptedServer, ToolCall

NO_MEMORY_TEAM = {
    "team": {"name": "assistant", "max_turns": 12},
    "agents": [
        {"role": "planner"},
        {"role": "tool_executor", "tools": ["calculator", "clock"]},
        {"role": "responder"},
    ],
}
YEAR = datetime.datetime.now(datetime.timezone.utc).year


def plan(*steps: dict[str, object]) -> str:
    return json.dumps({"goal": "answer the user", "steps": list(steps), "done": False})


def step(i: int, tool: str, args: dict[str, object] | None, instruction: str = "do it") -> dict[str, object]:
    return {
        "id": i,
        "assignee": "tool_executor",
        "instruction": instruction,
        "tool": tool,
        "args": None if args is None else json.dumps(args),
        "depends_on": [],
    }


def answer_from_tool_results(request: RecordedRequest) -> Reply:
    """The responder's reply, built from what it was actually sent (so the test sees what it saw)."""
    seen = " ".join(str(m.get("content")) for m in request.messages)
    return Reply(content=f"Answer based on: {seen[-300:]}")


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


@pytest.fixture
def settings(server: ScriptedServer, tmp_path: Path) -> Settings:
    (tmp_path / "huddle.yaml").write_text(
        f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: 0,"
        " price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}\n"
    )
    return load_settings()


async def run(
    settings: Settings, task: str, spec: dict[str, object] = NO_MEMORY_TEAM
) -> tuple[RunResult, GroupChatTeam]:
    team = GroupChatTeam(TeamSpec.model_validate(spec), settings)
    try:
        return await team.run(task), team
    finally:
        await team.close()


async def test_plan_routes_to_tools_without_manager_or_executor_model_calls(
    server: ScriptedServer, settings: Settings
) -> None:
    server.add_rule(
        Rule(
            agent="planner",
            reply=Reply(content=plan(step(1, "calculator", {"expression": "17*23"}), step(2, "clock", {}))),
        )
    )
    server.add_rule(Rule(agent="responder", reply=answer_from_tool_results))

    result, team = await run(settings, "What is 17*23 plus the current year?")

    assert [(d.speaker, d.policy) for d in result.decisions] == [
        ("planner", "rule"),
        ("tool_executor", "plan"),
        ("responder", "plan"),
    ]
    assert [m.source for m in result.messages] == ["user", "planner", "tool_executor", "responder"]
    tools_message = result.messages[2].content
    assert "calculator(expression='17*23') -> 391" in tools_message and f'"year": {YEAR}' in tools_message
    assert "391" in result.answer and str(YEAR) in result.answer  # the responder was shown both tool results
    assert [r.agent for r in server.chat_requests] == ["planner", "responder"]
    assert "manager" not in result.usage.by_agent and "tool_executor" not in result.usage.by_agent
    served = [r.usage for r in server.chat_requests]
    assert result.usage.calls == 2
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (
        sum(u[0] for u in served if u),
        sum(u[1] for u in served if u),
    )
    assert result.stop_reason and result.usage.cost_usd > 0
    assert team.ledger.decisions(result.run_id)[1]["policy"] == "plan"


async def test_unusable_plan_falls_back_to_answering(server: ScriptedServer, settings: Settings) -> None:
    server.add_rule(Rule(agent="planner", reply=Reply(content="I think we should just chat about it")))
    server.add_rule(Rule(agent="responder", reply=Reply(content="Here is a direct answer.")))
    always_plan = {**NO_MEMORY_TEAM, "team": {"name": "assistant", "plan": "always"}}
    result, _ = await run(settings, "Say hello", always_plan)
    assert result.answer == "Here is a direct answer."
    assert "unusable" in result.messages[1].content
    assert [d.speaker for d in result.decisions] == ["planner", "responder"]


NO_PLANNER_TEAM = {
    "team": {"name": "free", "max_turns": 8},
    "agents": [{"role": "tool_executor", "tools": ["calculator"]}, {"role": "responder"}],
}


@pytest.mark.parametrize("bad", ["Bob", "the planner agent", ""])
async def test_invalid_llm_choice_is_repaired_or_falls_back(
    server: ScriptedServer, settings: Settings, bad: str
) -> None:
    server.add_rule(Rule(agent="manager", times=1, reply=Reply(content=bad)))
    server.add_rule(Rule(agent="manager", reply=Reply(content="responder")))
    server.add_rule(Rule(agent="responder", reply=Reply(content="done")))
    result, _ = await run(settings, "hello", NO_PLANNER_TEAM)
    assert result.answer == "done"
    assert [(d.speaker, d.policy) for d in result.decisions] == [("responder", "repaired")]
    assert result.usage.by_agent["manager"].calls == 2


async def test_model_chosen_tool_call_then_the_only_allowed_speaker(server: ScriptedServer, settings: Settings) -> None:
    """The model keeps naming the previous speaker; with one other member left, the manager does not even ask."""
    server.add_rule(Rule(agent="manager", reply=Reply(content="tool_executor")))
    server.add_rule(
        Rule(
            agent="tool_executor",
            reply=Reply(tool_calls=[ToolCall(name="calculator", arguments={"expression": "6*7"})]),
        )
    )
    server.add_rule(Rule(agent="responder", reply=Reply(content="42")))
    result, _ = await run(settings, "what is six times seven", NO_PLANNER_TEAM)
    decisions = [(d.speaker, d.policy) for d in result.decisions]
    assert decisions == [("tool_executor", "llm"), ("responder", "rule")]
    assert result.usage.by_agent["manager"].calls == 1
    assert "-> 42" in result.messages[1].content
    assert result.answer == "42"


async def test_tool_errors_come_back_as_messages_and_the_run_finishes(
    server: ScriptedServer, settings: Settings
) -> None:
    server.add_rule(
        Rule(
            agent="planner",
            reply=Reply(
                content=plan(step(1, "calculator", {"expression": "1/0"}), step(2, "calculator", {"expr": "2+2"}))
            ),
        )
    )
    # Step 2's arguments are invalid, so the executor asks its model, which also gets them wrong.
    server.add_rule(
        Rule(agent="tool_executor", reply=Reply(tool_calls=[ToolCall(name="calculator", arguments={"wrong": 1})]))
    )
    server.add_rule(Rule(agent="responder", reply=Reply(content="Sorry, both calculations failed.")))
    result, _ = await run(settings, "calculate 1/0 and 2+2")
    tools_message = result.messages[2].content
    assert tools_message.count("ERROR") == 2
    assert "division by zero" in tools_message.lower() and "expression" in tools_message
    assert result.answer == "Sorry, both calculations failed."
    assert result.usage.by_agent["tool_executor"].calls == 1


def test_team_yaml_errors_name_file_line_and_field(tmp_path: Path) -> None:
    from huddle.errors import ConfigError
    from huddle.teams.spec import load_team

    bad = tmp_path / "team.yaml"
    bad.write_text("team: {name: t}\nagents:\n  - {role: planner}\n  - {role: resopnder}\n")
    with pytest.raises(ConfigError, match=r"team.yaml:4: agents.1.role: Input should be 'planner'"):
        load_team(bad)
    bad.write_text("team: {name: t}\nagents:\n  - {role: planner}\n  - {role: tool_executor}\n")
    with pytest.raises(ConfigError, match="exactly one responder"):
        load_team(bad)
    bad.write_text("team: {name: t}\nagents:\n  - {role: responder}\n")
    with pytest.raises(ConfigError, match="at least two members"):
        load_team(bad)
    assert load_team("assistant").team.name == "assistant"


async def test_a_session_saved_by_the_autogen_runtime_is_refused_with_a_clear_error(settings: Settings) -> None:
    team = GroupChatTeam(TeamSpec.model_validate(NO_MEMORY_TEAM), settings)
    old = {"chat": {"type": "TeamState", "version": "1.0.0", "agent_states": {}}}  # autogen's save_state shape
    with pytest.raises(HuddleError, match=r"older huddle .* start a new session"):
        await team.load_state(old)
    await team.close()
