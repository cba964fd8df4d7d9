"""Tokens spent by a huddle team versus a vanilla autogen SelectorGroupChat doing the same tasks.

Run: ``python bench/tokens_vs_autogen.py``. Both teams have the same four agents (planner, tool executor, memory,
responder) with the same prompts (``prompts/*.md``) and talk to one scripted OpenAI-compatible server that answers
every agent identically on both sides. Tokens are counted by the server (tiktoken over each request it received and
each reply it sent), so neither side can under-report. Vanilla autogen selects speakers with its model and lets its
tool executor ask the model for tool calls; huddle routes by plan and rule and runs plan-given tool calls directly.
Prints per task: server-side tokens and model calls for each side, the ratio huddle / vanilla, and whether both
reached the same final answer, and whether huddle ran every tool call the task needs (the scripted responder's answer
does not depend on the tool results, so only this column shows a skipped tool). The goal is a ratio <= 0.4 at equal
outcomes.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from assistant_tasks import TASKS, TEAM, Task, server_rules
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, SourceMatchTermination
from autogen_agentchat.teams import SelectorGroupChat

from huddle import prompts
from huddle.config.settings import load_settings
from huddle.models.factory import build_client
from huddle.teams.group_chat import GroupChatTeam
from huddle.testing import ScriptedServer
from huddle.tools.builtin import builtin_registry
from huddle.usage import UsageLedger


async def run_vanilla(task: Task, settings_dir: Path) -> str:
    """autogen as documented: AssistantAgents with our prompts, model-based selection."""
    settings = load_settings()
    ledger = UsageLedger()
    profile = settings.profile()
    tools = builtin_registry(settings_dir / "workspace").subset(["calculator", "clock"]).as_autogen()

    def client(agent: str):  # type: ignore[no-untyped-def]
        return build_client(profile, ledger, agent=agent)

    roster = "\n".join(f"- {a.agent_name}: {a.agent_description}" for a in TEAM.agents)
    tool_lines = "\n".join(f"- {t.name}: {t.description}" for t in tools)
    agents = [
        AssistantAgent(
            "planner",
            client("planner"),
            description=TEAM.agents[0].agent_description,
            system_message=prompts.render("planner", name="planner", max_steps=5, roster=roster, tools=tool_lines),
        ),
        AssistantAgent(
            "tool_executor",
            client("tool_executor"),
            tools=tools,
            description=TEAM.agents[1].agent_description,
            system_message=prompts.render("tool_executor", name="tool_executor", task="see above"),
        ),
        AssistantAgent(
            "memory",
            client("memory"),
            description=TEAM.agents[2].agent_description,
            system_message=TEAM.agents[2].agent_description,
        ),
        AssistantAgent(
            "responder",
            client("responder"),
            description=TEAM.agents[3].agent_description,
            system_message=prompts.render("responder", name="responder"),
        ),
    ]
    team = SelectorGroupChat(
        agents,  # type: ignore[arg-type]
        model_client=client("manager"),
        termination_condition=SourceMatchTermination(["responder"]) | MaxMessageTermination(12),
        allow_repeated_speaker=False,
    )
    result = await team.run(task=task.text)
    return result.messages[-1].to_text() if result.messages[-1].source == "responder" else ""


async def run_huddle(task: Task) -> tuple[str, bool]:
    """The answer, and whether every tool call the task needs ran (a scripted answer cannot show a skipped tool)."""
    team = GroupChatTeam(TEAM, load_settings())
    try:
        result = await team.run(task.text)
    finally:
        await team.close()
    ran = " ".join(m.content for m in result.messages if m.source == "tool_executor")
    return result.answer, all(f"{name}(" in ran for name, _ in task.calls)


def served(server: ScriptedServer) -> tuple[int, int]:
    requests = server.chat_requests
    return sum(sum(r.usage) for r in requests if r.usage), len(requests)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, ScriptedServer(rules=server_rules()) as server:
        home = Path(tmp)
        os.environ["HUDDLE_HOME"] = str(home / "data")
        os.environ.pop("HUDDLE_CONFIG", None)
        os.chdir(home)
        (home / "huddle.yaml").write_text(f"models:\n  default: {{model: scripted, base_url: '{server.base_url}'}}\n")
        print(
            f"{'task':46} {'vanilla tok':>11} {'calls':>5} {'huddle tok':>10} {'calls':>5} {'ratio':>6}  "
            "same answer  tools ran"
        )
        totals = [0, 0, 0, 0]
        for task in TASKS:
            server.reset()
            vanilla_answer = await run_vanilla(task, home)
            vanilla = served(server)
            server.reset()
            huddle_answer, tools_ran = await run_huddle(task)
            ours = served(server)
            same = vanilla_answer == huddle_answer == task.answer
            totals = [totals[0] + vanilla[0], totals[1] + vanilla[1], totals[2] + ours[0], totals[3] + ours[1]]
            print(
                f"{task.text[:46]:46} {vanilla[0]:11} {vanilla[1]:5} {ours[0]:10} {ours[1]:5} "
                f"{ours[0] / vanilla[0]:6.2f}  {same!s:11}  {tools_ran}"
            )
        print(f"{'total':46} {totals[0]:11} {totals[1]:5} {totals[2]:10} {totals[3]:5} {totals[2] / totals[0]:6.2f}")


if __name__ == "__main__":
    asyncio.run(main())
