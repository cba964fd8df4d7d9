"""The Temporal engine's costs, side by side: per-turn overhead against in-process on the same team, throughput
with one and two workers, and how long a surviving worker takes to finish a dead worker's session.

Everything is real: a Temporal dev server (WAL pragmas), `huddle worker` processes, a scripted OpenAI-compatible
model server whose replies take `MODEL_S` each. Run: ``python bench/temporal.py [--turns N] [--sessions N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from huddle.config.settings import Settings, load_settings
from huddle.engines.temporal.sessions import TemporalSession
from huddle.teams.base import Team
from huddle.testing import Reply, Rule, ScriptedServer
from huddle.testing.temporal import DevServer, Workers

MODEL_S = 0.05
SLOW_S = 30.0
WORKER_START_S = 8.0  # a worker's start-up: imports, the team's warm-up build


def _config(folder: Path, model: ScriptedServer, temporal: DevServer) -> Path:
    config = folder / "huddle.yaml"
    config.write_text(
        f"models:\n  default: {{model: scripted, base_url: '{model.base_url}', max_retries: 0}}\n"
        f"data_dir: {folder / 'data'}\ntemporal: {{address: '{temporal.address}', task_queue: bench}}\n"
    )
    return config


async def _in_process(settings: Settings, turns: int) -> tuple[list[float], int]:
    """Each turn's seconds, and the model calls of the last."""
    times, calls = [], 0
    async with Team.load("assistant", settings) as team:
        for i in range(turns):
            started = time.perf_counter()
            calls = (await team.run(f"question {i}")).usage.calls
            times.append(time.perf_counter() - started)
    return times, calls


async def _on_temporal(settings: Settings, turns: int) -> tuple[list[float], int]:
    session = await TemporalSession.open(settings, "assistant")
    await session.run("warm up")
    times, calls = [], 0
    for i in range(turns):
        started = time.perf_counter()
        calls = (await session.run(f"question {i}")).usage.calls
        times.append(time.perf_counter() - started)
    await session.close()
    return times, calls


async def _throughput(settings: Settings, sessions: int) -> float:
    async def one(i: int) -> None:
        session = await TemporalSession.open(settings, "assistant")
        await session.run(f"question {i}")
        await session.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(sessions)))
    return sessions / (time.perf_counter() - started)


async def _takeover(settings: Settings, model: ScriptedServer, workers: Workers) -> float:
    """Seconds from SIGKILL of the worker running a slow call to the turn's answer, less the retried call's time.

    Only the busy worker runs when the slow call starts; the survivor starts then, and is killed into service once
    it polls."""
    busy = workers.processes[-1]
    session = await TemporalSession.open(settings, "assistant")
    turn = asyncio.create_task(session.run("the slow one"))
    while not any(r.agent == "responder" and "slow" in r.last_text for r in model.requests):
        await asyncio.sleep(0.05)
    workers.start()
    await asyncio.sleep(WORKER_START_S)
    workers.kill(busy)
    killed = time.perf_counter()
    await turn
    await session.close()
    return time.perf_counter() - killed - MODEL_S


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=20)
    options = parser.parse_args()
    slow = Rule(agent="responder", last="slow", times=1, reply=Reply(content="done", delay_s=SLOW_S))
    with (
        tempfile.TemporaryDirectory() as folder_name,
        ScriptedServer([slow], fallback=Reply(content="ok", delay_s=MODEL_S)) as model,
    ):
        folder = Path(folder_name)
        temporal = DevServer(folder / "temporal.sqlite")
        temporal.start()
        workers = Workers(_config(folder, model, temporal), folder)
        try:
            settings = load_settings(folder / "huddle.yaml")
            local, local_calls = asyncio.run(_in_process(settings, options.turns))
            workers.start()
            remote, remote_calls = asyncio.run(_on_temporal(settings, options.turns))
            one = asyncio.run(_throughput(settings, options.sessions))
            workers.start()
            time.sleep(WORKER_START_S)
            two = asyncio.run(_throughput(settings, options.sessions))
            workers.kill(workers.processes[0])  # one worker left, busy with the slow call next
            takeover = asyncio.run(_takeover(settings, model, workers))
        finally:
            workers.close()
            temporal.kill()
    median_local, median_remote = statistics.median(local), statistics.median(remote)
    print(
        f"model reply time {MODEL_S * 1000:.0f} ms, {options.turns} turns of the assistant team "
        f"({local_calls} model call(s) a turn in-process, {remote_calls} on temporal)"
    )
    print(
        f"per turn       in-process {median_local * 1000:7.1f} ms   temporal {median_remote * 1000:7.1f} ms   "
        f"overhead {(median_remote - median_local) * 1000:6.1f} ms ({median_remote / median_local:.2f}x)"
    )
    print(
        f"throughput     1 worker {one:6.2f} turns/s   2 workers {two:6.2f} turns/s   ({two / one:.2f}x), "
        f"{options.sessions} concurrent sessions"
    )
    print(f"takeover       {takeover:.2f} s from SIGKILL of the busy worker to the answer (goal <= 5 s)")


if __name__ == "__main__":
    main()
