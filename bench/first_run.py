"""The README's first command as a new user meets it: wall time on the embedded model, and a dead server's failure.

Run: ``python bench/first_run.py [--runs 3]``. Each run is a fresh ``huddle run ... --json`` process (model load and
imports included) in a temporary data directory, on the embedded default (no key). Printed per run: wall seconds, the
manager's decisions, the model calls by agent; then the same task against a profile on a closed port: wall seconds,
exit code, model-call attempts recorded in the ledger and the error line. Goals (issue 13): <= 8 s and no planner call
for the README task; exit 1, one ``error:`` line, <= 10 s and <= 6 attempts for the dead server.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASK = "Give me three tips for writing clear emails"


def huddle(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "huddle", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    return time.perf_counter() - started, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "HUDDLE_CONFIG", "HUDDLE_MODEL")}
        env["HUDDLE_HOME"] = str(folder / "data")
        for run in range(1, args.runs + 1):
            wall, proc = huddle(["run", TASK, "--json"], folder, env)
            result = json.loads(proc.stdout)
            decisions = ", ".join(f"{d['speaker']}:{d['policy']}" for d in result["decisions"])
            calls = {agent: totals["calls"] for agent, totals in result["usage"]["by_agent"].items()}
            print(f"embedded run {run}: {wall:5.2f} s  rc {proc.returncode}  decisions [{decisions}]  calls {calls}")
        (folder / "huddle.yaml").write_text("models:\n  default: {model: m, base_url: 'http://127.0.0.1:1/v1'}\n")
        wall, proc = huddle(["run", "hi"], folder, env)
        _, usage = huddle(["usage", "--json"], folder, env)
        attempts = json.loads(usage.stdout)["total"]["errors"]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        print(f"closed port: {wall:5.2f} s  rc {proc.returncode}  {attempts} attempts  {len(errors)} error line(s)")
        print(f"  {errors[0] if errors else proc.stderr.strip()[-300:]}")


if __name__ == "__main__":
    main()
