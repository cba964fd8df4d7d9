"""Run the pattern examples offline, against huddle's scripted OpenAI-compatible server, and show what each kind did.

    python examples/patterns/run_offline.py                      # every example YAML in this folder
    python examples/patterns/run_offline.py hierarchical.yaml    # one of them
    python examples/patterns/run_offline.py --python             # a team declared in Python, no YAML

The scripted "model" answers ``agent(what it was sent)`` after 0.2 s, so the transcript shows who saw whose output and
the timings show what ran concurrently; a hierarchical manager gives every worker the task. With a real model, run
the same files with ``huddle run --team examples/patterns/NAME.yaml "TASK"``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from huddle.config.settings import Settings, load_settings
from huddle.teams.base import build_team
from huddle.teams.kinds import PatternSpec, load_any_team
from huddle.testing import RecordedRequest, Reply, Rule, ScriptedServer

HERE = Path(__file__).resolve().parent
TASK = "Customer 42: the lamp from order 1042 (80 euro) arrived broken."
LATENCY_S = 0.2


def scripted_model(request: RecordedRequest) -> Reply:
    """Echo with a delay; a hierarchical manager delegates to every worker in its prompt; a planner answers directly."""
    if "Reply with JSON only" in request.system_text:
        workers = re.findall(r"^- ([A-Za-z][\w-]*): ", request.system_text, flags=re.M)
        assignments = [{"worker": w, "task": request.last_text} for w in workers]
        return Reply(content=json.dumps({"assignments": assignments}), delay_s=LATENCY_S)
    if request.agent == "planner":
        return Reply(content='{"goal": "answer", "steps": [], "done": true}', delay_s=LATENCY_S)
    return Reply(content=f"{request.agent}({request.last_text[:60]})", delay_s=LATENCY_S)


PYTHON_TEAM = PatternSpec.model_validate(
    {
        "team": {"name": "triage", "kind": "parallel", "member_timeout_s": 5},
        "agents": [
            {"name": "urgency", "instruction": "Rate the urgency of the message from 1 to 5."},
            {"name": "topic", "instruction": "Name the topic of the message in two words."},
        ],
        "aggregator": {"name": "router", "instruction": "Say which queue the message goes to."},
    }
)


async def show(name: str, settings: Settings) -> None:
    spec = PYTHON_TEAM if name == "--python" else load_any_team(HERE / name)
    team = build_team(spec, settings)
    started = time.perf_counter()
    try:
        result = await team.run(TASK)
    finally:
        await team.close()
    elapsed = time.perf_counter() - started
    print(f"\n=== {name}: team {result.team} ({spec.team.kind}) ===")
    for message in result.messages[1:]:
        print(f"  {message.source:>22} | {message.content.splitlines()[0][:90] if message.content else ''}")
    print(f"  answer: {result.answer[:200]!r}")
    print(f"  stop: {result.stop_reason}")
    print(f"  {result.usage.calls} model calls in {elapsed:.2f} s ({LATENCY_S} s each)", end="")
    print(f", failures: {result.model_dump().get('failures') or 'none'}")


async def main(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as home, ScriptedServer([Rule(reply=scripted_model)]) as server:
        os.environ["HUDDLE_HOME"] = home
        config = Path(home) / "huddle.yaml"
        config.write_text(f"models:\n  default: {{model: scripted, base_url: '{server.base_url}'}}\n")
        settings = load_settings(config)
        for name in names:
            await show(name, settings)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or sorted(p.name for p in HERE.glob("*.yaml"))))
