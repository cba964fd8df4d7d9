"""Pass rate with and without injected faults: retries, fallbacks and guards must keep the answers coming.

Run: ``python bench/faults.py [--rate 0.2] [--rounds 3]``. The assistant task set (`assistant_tasks.py`) and the
support scenario suite run on the huddle team against the scripted server, first clean, then with a share of
requests faulted at random (429 with Retry-After, 500, a timeout past the client's, a stream cut mid-way, malformed
tool-call JSON), plus a team without a planner whose manager model names a non-member at the same rate. The profile
retries 4 times and then falls back to a second profile. Prints, side by side: pass rate, requests, faulted requests
(each retried or handed to the fallback), mean latency, lost messages (the task or the answer missing from a
finished run's transcript; must be 0) and skipped members (members the task needed that never spoke: routing
degraded by invalid speaker names).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from assistant_tasks import TASKS, TEAM, Task, server_rules

from huddle.config.settings import load_settings
from huddle.evals.scenarios import run_async
from huddle.teams.base import RunResult
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.spec import TeamSpec
from huddle.testing import Fault, RecordedRequest, Reply, Rule, ScriptedServer

SUPPORT = Path(__file__).resolve().parent.parent / "examples" / "support"
SUPPORT_RULES = SUPPORT / "models" / "scripted.yaml"
FAULTS = [
    Fault(kind="rate_limit", retry_after=0.05),
    Fault(kind="server_error"),
    Fault(kind="timeout", delay_s=2.0),
    Fault(kind="cut_stream"),
    Fault(kind="malformed_tool_json"),
]
MANAGED = TeamSpec.model_validate(
    {
        "team": {"name": "managed", "max_turns": 8},
        "agents": [{"role": "tool_executor", "tools": ["calculator", "clock"]}, {"role": "responder"}],
    }
)


def bad_speaker(rate: float, rng: random.Random) -> Rule:
    """The manager's model answers with a non-member at `rate`, else the right next speaker."""

    def choose(request: RecordedRequest) -> Reply:
        if rng.random() < rate:
            return Reply(content=rng.choice(["Bob", "the planner agent", ""]))
        history = request.system_text.split("Conversation so far")[-1]
        spoken = "tool_executor:" in history
        return Reply(content="responder" if spoken else "tool_executor")

    return Rule(agent="manager", reply=choose)


async def run_task(spec: TeamSpec, task: Task) -> tuple[RunResult, float]:
    team = GroupChatTeam(spec, load_settings())
    started = time.perf_counter()
    try:
        return await team.run(task.text), time.perf_counter() - started
    finally:
        await team.close()


def skipped(spec: TeamSpec, task: Task, result: RunResult) -> int:
    """Members the task needed that did not speak (routing degraded, e.g. by invalid speaker names)."""
    expected = {"responder"} | ({"planner"} if spec is TEAM else set())
    if task.calls:
        expected.add("tool_executor")
    return len(expected - {m.source for m in result.messages})


def lost(task: Task, result: RunResult) -> int:
    """Messages that must be in every finished run's transcript and are not: the user's task, the answer."""
    contents = [(m.source, m.content) for m in result.messages]
    return int(("user", task.text) not in contents) + int(not result.answer)


async def suite(server: ScriptedServer, rounds: int) -> dict[str, float]:
    server.reset()
    passed = total = lost_messages = skipped_members = 0
    latencies: list[float] = []
    for _ in range(rounds):
        for spec in (TEAM, MANAGED):
            for task in TASKS:
                result, seconds = await run_task(spec, task)
                total += 1
                passed += result.answer == task.answer
                lost_messages += lost(task, result)
                skipped_members += skipped(spec, task, result)
                latencies.append(seconds)
    failed_attempts = sum(1 for r in server.chat_requests if r.fault is not None)
    return {
        "runs": total,
        "pass_rate": passed / total,
        "failed_attempts": failed_attempts,
        "requests": len(server.chat_requests),
        "mean_latency_s": statistics.mean(latencies),
        "lost": lost_messages,
        "skipped": skipped_members,
    }


async def main(rate: float, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["HUDDLE_HOME"] = str(home / "data")
        os.environ.pop("HUDDLE_CONFIG", None)
        os.chdir(home)
        results = {}
        for label, fault_rate in (("clean", 0.0), (f"{rate:.0%} faults", rate)):
            rng = random.Random(7)
            rules = [bad_speaker(fault_rate, rng), *server_rules()]
            with ScriptedServer(rules=rules, fault_rate=fault_rate, fault_kinds=FAULTS, seed=7) as server:
                # A fallback profile (here the same server) takes over once a call's own retries are spent.
                (home / "huddle.yaml").write_text(
                    f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: 4,"
                    " timeout_s: 1.0, fallback: backup}\n"
                    f"  backup: {{model: scripted-backup, base_url: '{server.base_url}', max_retries: 4,"
                    " timeout_s: 1.0}\n"
                )
                results[label] = await suite(server, rounds)
        header = ("runs", "pass rate", "requests", "faulted", "mean s", "lost msgs", "skipped")
        print(f"{'':14} " + " ".join(f"{h:>9}" for h in header))
        for label, r in results.items():
            values = (
                r["runs"],
                f"{r['pass_rate']:.0%}",
                r["requests"],
                r["failed_attempts"],
                f"{r['mean_latency_s']:.3f}",
                r["lost"],
                r["skipped"],
            )
            print(f"{label:14} " + " ".join(f"{v:>9}" for v in values))
        clean, faulty = results.values()
        print(f"extra latency per run with faults: {faulty['mean_latency_s'] - clean['mean_latency_s']:+.3f} s")
        print()
        print("support example suite (huddle scenario run examples/support), 1 trial per scenario:")
        for label, fault_rate in (("clean", 0.0), (f"{rate:.0%} faults", rate)):
            rules = home / f"rules-{fault_rate}.yaml"
            rules.write_text(SUPPORT_RULES.read_text() + f"\nfault_rate: {fault_rate}\nseed: 7\n")
            started = time.perf_counter()
            suite_result = await run_async([SUPPORT], trials=1, model=str(rules))
            passed = sum(s.passes for s in suite_result.scenarios)
            print(
                f"  {label:12} {passed}/{len(suite_result.scenarios)} scenarios passed, "
                f"pass^1 {suite_result.pass_hat_k['1']:.2f}, {time.perf_counter() - started:.1f} s"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    asyncio.run(main(options.rate, options.rounds))
