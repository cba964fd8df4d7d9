"""The assistant team from Python: build it, run one task, print the answer, who spoke and why, and what it cost.

    python examples/assistant_team.py "What is 17*23 plus the current year?"

Uses the active model profile (the embedded SmolLM2 when no OPENAI_API_KEY is set; see README "Configuration").
"""

from __future__ import annotations

import asyncio
import sys

import huddle


async def main(task: str) -> None:
    agents = [huddle.planner(), huddle.tool_executor(tools=["calculator", "clock"]), huddle.responder()]
    async with huddle.Team.chat("assistant", agents, max_turns=12) as team:
        result = await team.run(task)
    print(result.answer)
    for decision in result.decisions:
        print(f"  turn {decision.turn}: {decision.speaker:14} by {decision.policy:10} {decision.reason}")
    usage = result.usage
    print(f"  {usage.calls} model calls, {usage.total_tokens} tokens, ${usage.cost_usd:.6f}")


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "What is 17*23 plus the current year?"))
