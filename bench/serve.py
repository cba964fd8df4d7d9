"""``huddle serve`` under load: what serving a team over HTTP adds to running it in-process, at 200 sessions.

Run: ``python bench/serve.py`` (offline, about two minutes on 2 cores; ``--sessions``, ``--sequential`` change the
sizes). Three processes: the scripted model server (``--model-server``, a child, 100 ms before each reply, its
answer streamed in words), ``huddle serve`` (the real command, a child, on a fresh data directory) and this one, the
client: the openai SDK's async client streaming Chat Completions, one new session per request, as a stateless
client sends them. The team is a planner and a responder (the direct route: one model call per turn).

The same team runs in-process as the baseline: `build_team` + `Team.run_stream` + close, the same work the server's
hub does for a turn minus HTTP, SSE, the session store and saving the session. For each, the time to the first
token (the first answer text: a content delta over HTTP, a streaming chunk in-process) and to the end:

1. ``--sequential`` turns one at a time (after a warm-up): the overhead of one request on an idle server, p50/p95
   of server minus in-process. Goal: p95 overhead <= 30 ms.
2. ``--sessions`` turns at once (200): the same figures under load, and requests/s over the burst's wall time.
3. RSS: the server's resident memory after a burst of ``--sessions`` new sessions and after a second one; the growth
   per session is what an idle session keeps in memory (the first burst warms the allocator). Goal: <= 50 KB.
   The peak RSS during a burst, per turn, is what a turn in flight costs.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import httpx2
import openai
from autogen_agentchat.messages import ModelClientStreamingChunkEvent

from huddle.config.settings import load_settings
from huddle.teams.base import RunResult, build_team
from huddle.teams.kinds import load_any_team
from huddle.testing import Reply, ScriptedServer
from huddle.usage import UsageLedger

LATENCY_S = 0.1
ANSWER = "The answer, in a few words streamed one by one to the client as the model writes them."
TEAM = "team: {name: desk, kind: group_chat, max_turns: 4}\nagents:\n  - {role: planner}\n  - {role: responder}\n"
TASK = "What is the answer?"
_READY_S = 60.0


@dataclass(frozen=True)
class Timing:
    first_s: float
    total_s: float


def model_server() -> None:
    """The child that plays the model: prints its URL, serves until its stdin closes."""
    with ScriptedServer(fallback=Reply(content=ANSWER, delay_s=LATENCY_S)) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


async def in_process(folder: Path, count: int, concurrent: bool) -> list[Timing]:
    """`count` turns of the team run in this process, one after another or all at once."""
    settings = load_settings(folder / "huddle.yaml", data_dir=folder / "inproc")
    spec = load_any_team(folder / "desk.yaml")
    ledger = UsageLedger(settings.ledger_path)

    async def turn() -> Timing:
        started = time.perf_counter()
        first = None
        team = build_team(spec, settings, ledger=ledger)
        try:
            async for item in team.run_stream(TASK):
                if first is None and isinstance(item, ModelClientStreamingChunkEvent) and item.content.strip():
                    first = time.perf_counter() - started
                if isinstance(item, RunResult) and not item.answer:
                    raise RuntimeError(f"the in-process run failed: {item.stop_reason}")
        finally:
            await team.close()
        return Timing(first or 0.0, time.perf_counter() - started)

    try:
        return await _run(turn, count, concurrent)
    finally:
        ledger.close()


async def over_http(url: str, count: int, concurrent: bool) -> list[Timing]:
    """`count` streamed Chat Completions, each a new session, one after another or all at once."""
    # The openai SDK's own HTTP client (httpx2), with room for every request at once (its default pool is 100).
    limits = httpx2.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    http = openai.DefaultAsyncHttpxClient(limits=limits, timeout=300)
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, http_client=http) as client:

        async def turn() -> Timing:
            started = time.perf_counter()
            first = None
            text = ""
            stream = await client.chat.completions.create(
                model="desk", messages=[{"role": "user", "content": TASK}], stream=True
            )
            async for chunk in stream:
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    first = first or time.perf_counter() - started
                    text += delta
            if text != ANSWER:
                raise RuntimeError(f"the server answered {text!r}")
            return Timing(first or 0.0, time.perf_counter() - started)

        return await _run(turn, count, concurrent)


async def _run(turn: Callable[[], Awaitable[Timing]], count: int, concurrent: bool) -> list[Timing]:
    if concurrent:
        return list(await asyncio.gather(*(turn() for _ in range(count))))
    return [await turn() for _ in range(count)]


def rss_kb(pid: int) -> int:
    """The resident memory of a process and its children (the workers of ``--workers N``), in KB."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total = int(line.split()[1])
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return total + sum(rss_kb(int(child)) for child in children)


class PeakRss:
    """The highest RSS of a process while the block runs, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = rss_kb(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak_kb = max(self.peak_kb, rss_kb(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def compare(title: str, local: list[Timing], served: list[Timing]) -> None:
    """Side by side: in-process and server p50/p95 of first token and total, the overhead and the ratio."""
    print(f"\n{title}")
    print(f"  {'':22}{'in-process':>12}{'server':>12}{'overhead':>12}{'ratio':>8}")
    for name in ("first_s", "total_s"):
        for p in (50, 95):
            a = pct([getattr(t, name) for t in local], p) * 1000
            b = pct([getattr(t, name) for t in served], p) * 1000
            label = f"{'first token' if name == 'first_s' else 'total'} p{p} (ms)"
            print(f"  {label:22}{a:12.1f}{b:12.1f}{b - a:12.1f}{b / a:8.2f}")


def start_server(folder: Path, workers: int) -> tuple[subprocess.Popen[str], str]:
    config, data, team = str(folder / "huddle.yaml"), str(folder / "data"), str(folder / "desk.yaml")
    options = ["--team", team, "--port", "0", "--workers", str(workers)]
    process = subprocess.Popen(
        [sys.executable, "-m", "huddle", "--config", config, "--data-dir", data, "serve", *options],
        stdout=subprocess.PIPE,
        stderr=(folder / "serve.log").open("w"),
        text=True,
    )
    assert process.stdout is not None
    banner = process.stdout.readline()
    if not banner.startswith("huddle serve: "):
        raise RuntimeError(f"huddle serve did not start: {(folder / 'serve.log').read_text()}")
    threading.Thread(target=process.stdout.read, daemon=True).start()  # the access log: drained, not kept
    url = banner.split()[2]
    deadline = time.monotonic() + _READY_S
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("huddle serve did not become ready")
        time.sleep(0.1)


async def bench(folder: Path, sessions: int, sequential: int, workers: int) -> None:
    model = subprocess.Popen(
        [sys.executable, __file__, "--model-server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert model.stdout is not None and model.stdin is not None
    base_url = model.stdout.readline().strip()
    (folder / "desk.yaml").write_text(TEAM)
    (folder / "huddle.yaml").write_text(
        f"models:\n  default: {{model: scripted, base_url: '{base_url}', max_retries: 0, timeout_s: 300}}\n"
    )
    server, url = start_server(folder, workers)
    try:
        await in_process(folder, 3, False)  # warm-ups: imports, connections, the stores' first open
        await over_http(url, 3, False)
        local_seq = await in_process(folder, sequential, False)
        served_seq = await over_http(url, sequential, False)
        compare(f"{sequential} turns one at a time ({LATENCY_S * 1000:.0f} ms model latency)", local_seq, served_seq)

        started = time.perf_counter()
        local_burst = await in_process(folder, sessions, True)
        local_wall = time.perf_counter() - started
        before_kb = rss_kb(server.pid)
        with PeakRss(server.pid) as peak:
            started = time.perf_counter()
            served_burst = await over_http(url, sessions, True)
            served_wall = time.perf_counter() - started
        first_kb = rss_kb(server.pid)
        await over_http(url, sessions, True)
        second_kb = rss_kb(server.pid)
        compare(f"{sessions} turns at once, each a new session", local_burst, served_burst)
        print(f"  {'requests/s':22}{sessions / local_wall:12.1f}{sessions / served_wall:12.1f}")

        idle_kb = (second_kb - first_kb) / sessions
        live_kb = (peak.peak_kb - before_kb) / sessions
        print("\nserver RSS")
        print(f"  before the bursts {before_kb / 1024:.1f} MB, peak during the first {peak.peak_kb / 1024:.1f} MB")
        print(f"  after the first burst {first_kb / 1024:.1f} MB, after the second {second_kb / 1024:.1f} MB")
        print(f"  per idle session {idle_kb:.1f} KB (goal <= 50), per turn in flight {live_kb:.1f} KB")

        overhead = pct([s.total_s for s in served_seq], 95) - pct([t.total_s for t in local_seq], 95)
        verdict = {True: "met", False: "NOT met"}
        print(f"\ngoals: p95 overhead one at a time {overhead * 1000:.1f} ms (<= 30): {verdict[overhead <= 0.030]}")
        print(f"       RSS per idle session {idle_kb:.1f} KB (<= 50): {verdict[idle_kb <= 50]}")
    finally:
        server.terminate()
        server.wait(60)
        model.stdin.close()
        model.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200, help="turns at once in a burst (default 200)")
    parser.add_argument("--sequential", type=int, default=30, help="turns one at a time (default 30)")
    parser.add_argument("--workers", type=int, default=1, help="huddle serve --workers (default 1)")
    parser.add_argument("--model-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model_server:
        model_server()
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="huddle-bench-serve-") as folder:
        asyncio.run(bench(Path(folder), args.sessions, args.sequential, args.workers))
    print(f"\nfinished in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
