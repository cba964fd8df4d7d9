"""How fast ``huddle --help`` starts, next to plain Python and to importing the model stack eagerly.

Run: ``python bench/cli_startup.py [--runs 15]``. Prints the median and best wall time of each command over warm
runs (one untimed run first fills the OS and bytecode caches), and each one's ratio to bare ``python -c pass``.
The target is ``huddle --help`` under 0.5 s on a warm cache.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str], runs: int) -> list[float]:
    subprocess.run(cmd, capture_output=True, check=True)
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    script = shutil.which("huddle")
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "huddle --help (console script)": [script or "huddle", "--help"],
        "python -m huddle --help": [sys.executable, "-m", "huddle", "--help"],
        "import autogen+openai eagerly": [sys.executable, "-c", "import autogen_agentchat, autogen_ext.models.openai"],
    }
    base = None
    print(f"{'command':34} {'median s':>9} {'best s':>8} {'x python':>9}   ({runs} warm runs each)")
    for name, cmd in commands.items():
        walls = timed(cmd, runs)
        median = statistics.median(walls)
        base = base or median
        print(f"{name:34} {median:9.3f} {min(walls):8.3f} {median / base:9.2f}")


if __name__ == "__main__":
    main()
