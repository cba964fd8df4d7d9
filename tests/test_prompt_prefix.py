"""Prompts are prefix-stable across the turns of a chat: each request to an agent starts with the one it sent before,
byte for byte, so a provider's prompt cache reads that prefix at the cached rate (issue 16, part 2)."""

from __future__ import annotations

import json
from pathlib import Path

import huddle
from huddle.config.settings import load_settings
from huddle.testing import RecordedRequest, Reply, Rule, ScriptedServer

PLAN = json.dumps(
    {"goal": "add", "steps": [{"id": 1, "assignee": "tool_executor", "instruction": "add 2 and 3"}], "done": False}
)


def responder_requests(server: ScriptedServer) -> list[RecordedRequest]:
    return [r for r in server.chat_requests if r.agent == "responder"]


async def test_each_chat_turn_to_the_responder_starts_with_the_turn_before(tmp_path: Path) -> None:
    rules = [
        Rule(agent="planner", reply=Reply(content=json.dumps({"goal": "answer", "steps": [], "done": True}))),
        Rule(agent="responder", reply=Reply(content="Answer.")),
    ]
    with ScriptedServer(rules) as server:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: gpt-4o-mini, base_url: '{server.base_url}'}}\n"
        )
        team = huddle.Team.chat("desk", [huddle.planner(), huddle.responder()], load_settings())
        async with team:
            for task in ("What is a haiku?", "Write one about tea.", "Now one about rain."):
                await team.run(task)
        first, second, third = (r.messages for r in responder_requests(server))
    assert second[: len(first)] == first and third[: len(second)] == second  # unchanged, in order
    assert second[len(first)] == {"role": "assistant", "content": "Answer."}  # the first answer, then the new turn
    assert second[-1]["role"] == "user" and second[-1]["content"] == "Write one about tea."
    assert first[0]["role"] == "system" and first[0] == third[0]  # one system prompt: nothing per-call in it


async def test_the_tool_executor_system_prompt_is_the_same_for_every_step(tmp_path: Path) -> None:
    """It held the step's instruction, so no two steps of a run shared a system prompt."""
    plan = json.loads(PLAN)
    plan["steps"].append({"id": 2, "assignee": "tool_executor", "instruction": "multiply 4 by 5"})
    rules = [
        Rule(agent="planner", reply=Reply(content=json.dumps(plan))),
        Rule(agent="tool_executor", reply=Reply(content="no tool")),
        Rule(agent="responder", reply=Reply(content="Done.")),
    ]
    with ScriptedServer(rules) as server:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{server.base_url}'}}\n"
        )
        agents = [huddle.planner(), huddle.tool_executor(tools=["calculator"]), huddle.responder()]
        async with huddle.Team.chat("desk", agents, load_settings(), plan="always") as team:
            await team.run("Add 2 and 3, then multiply 4 by 5.")
        steps = [r for r in server.chat_requests if r.agent == "tool_executor"]
    assert len(steps) == 2 and steps[0].messages[0] == steps[1].messages[0]
    # the two steps are independent, so they run side by side and reach the server in either order
    assert sorted(s.messages[-1]["content"] for s in steps) == ["add 2 and 3", "multiply 4 by 5"]
