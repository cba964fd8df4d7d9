"""Prompt-cache hit rate and dollars: multi-turn chats against a scripted server that plays OpenAI's prompt cache.

Run: ``python bench/prompt_cache.py [--turns 6]``. Offline: ``ScriptedServer(prompt_cache=True)`` reports as cached
the prefix each request shares with an earlier one (from 1,024 tokens, in 128-token steps, OpenAI's rule), the real
openai client reads ``prompt_tokens_details.cached_tokens``, and the ledger prices the calls at gpt-4o-mini's table
rates (no ``price:`` in the profile). Two chats:

- ``chat``: a metered client holding a conversation behind a long static system prompt (~1,500 tokens of policy),
  each turn the whole conversation so far plus the new message, as a prefix-stable chat client sends it;
- ``team``: ``huddle chat`` 's planner + responder group chat, whose responder repeats its earlier exchanges after
  its system prompt (and keeps the last 3).

For each it prints per turn the prompt and cached tokens, then the hit rate (cached / prompt tokens) and the dollars
with caching (what the ledger charged) and without (the same tokens all at the input rate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from autogen_core.models import AssistantMessage, LLMMessage, SystemMessage, UserMessage

import huddle
from huddle.config.settings import ModelProfile, load_settings
from huddle.models.factory import build_client
from huddle.testing import Reply, Rule, ScriptedServer
from huddle.usage import UsageLedger, UsageRecord

MODEL = "gpt-4o-mini"
POLICY = " ".join(
    f"Rule {n}: answer questions about order {n} politely, cite the policy section, and never promise refunds "
    "beyond thirty days without a manager's approval."
    for n in range(1, 61)
)  # a static system prompt of ~1,500 tokens, the same every turn
ANSWER = "Here is what the policy says about that, section by section, with the exceptions that apply. " * 24
QUESTIONS = [f"Question {n}: what does the policy say about order {n * 7}?" for n in range(1, 21)]


async def plain_chat(server: ScriptedServer, turns: int) -> list[UsageRecord]:
    """A conversation behind a static system prompt, each turn sending everything so far plus the new message."""
    ledger = UsageLedger()
    profile = ModelProfile(name="mini", model=MODEL, base_url=server.base_url)
    client = build_client(profile, ledger, agent="chat")
    conversation: list[LLMMessage] = [SystemMessage(content=POLICY)]
    try:
        for question in QUESTIONS[:turns]:
            conversation.append(UserMessage(content=question, source="user"))
            result = await client.create(conversation)
            conversation.append(AssistantMessage(content=str(result.content), source="chat"))
    finally:
        await client.close()
    return ledger.records()


async def team_chat(server: ScriptedServer, turns: int, folder: Path) -> list[UsageRecord]:
    """``huddle chat`` 's group chat (planner, responder) for `turns` messages on one team, as a chat session runs."""
    (folder / "huddle.yaml").write_text(f"models:\n  default: {{model: {MODEL}, base_url: '{server.base_url}'}}\n")
    os.environ["HUDDLE_HOME"] = str(folder / "home")
    os.chdir(folder)
    settings = load_settings()
    async with huddle.Team.chat("desk", [huddle.planner(), huddle.responder()], settings) as team:
        for question in QUESTIONS[:turns]:
            await team.run(question)
        return [r for r in team.ledger.records() if r.agent == "responder"]


def report(name: str, records: list[UsageRecord]) -> None:
    prompt = sum(r.prompt_tokens for r in records)
    cached = sum(r.cached_tokens for r in records)
    cost = sum(r.cost_usd for r in records)
    saved = sum(r.saved_usd for r in records)
    print(
        f"{name}: per turn (prompt / cached tokens): "
        + ", ".join(f"{r.prompt_tokens}/{r.cached_tokens}" for r in records)
    )
    print(
        f"{name}: {len(records)} calls, {prompt} prompt tokens, {cached} cached, "
        f"hit rate {cached / max(prompt, 1):.0%}; "
        f"${cost:.6f} with caching, ${cost + saved:.6f} without ({saved / max(cost + saved, 1e-12):.0%} saved); "
        f"prices from the {', '.join(sorted({str(r.price_source) for r in records}))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=6)
    args = parser.parse_args()
    started = time.perf_counter()
    plan = json.dumps({"goal": "answer", "steps": [], "done": True})
    rules = [Rule(agent="planner", reply=Reply(content=plan)), Rule(reply=Reply(content=ANSWER))]
    with ScriptedServer(rules, prompt_cache=True) as server:
        report("chat", asyncio.run(plain_chat(server, args.turns)))
    with ScriptedServer(rules, prompt_cache=True) as server, tempfile.TemporaryDirectory() as folder:
        report("team", asyncio.run(team_chat(server, args.turns, Path(folder))))
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
