"""Framework overhead and concurrency: huddle's teams against vanilla autogen, all against the scripted server.

Run: ``python bench/overhead.py`` (offline, about three minutes on 2 cores; ``--tasks``, ``--repeats``, ``--sessions``
change the sizes).

The scripted OpenAI-compatible server runs in a child process (``--serve``), so this process's CPU time is the
client side alone: autogen, the openai client, huddle. The model's latency is the server's delay before answering,
chosen per request by the profile's model name (``lat0``, ``lat100``, ``lat300``: milliseconds).

1. Framework CPU per turn at zero model latency: process CPU time / agent turns, over ``--tasks`` tasks, for the
   same turns done by huddle and by vanilla autogen. Managed chat: planner -> tool executor (calculator) ->
   responder; vanilla ``SelectorGroupChat`` picks each speaker with a model call as documented and its tool executor
   asks its model for the tool call, ``RoundRobinGroupChat`` is the cheapest vanilla way to get the same three turns;
   huddle routes by rule and plan (the tool call needs no model call). Pipeline: four model agents in a row, huddle
   ``kind: sequential`` vs ``RoundRobinGroupChat``. Goal: <= 2 ms/turn and <= 1.0x vanilla. Then the same teams on
   autogen's in-process ``ReplayChatCompletionClient`` (no openai SDK, no HTTP): what each framework itself costs.
   A cProfile of the huddle runs over HTTP, summed by package, says where the time goes.
2. Fan-out latency: a ``kind: parallel`` team of 8 members at 300 ms model latency; the run's wall time against the
   slowest of its 8 calls as the ledger measured them. Goal: <= 1.2x.
3. Concurrent sessions: ``--sessions`` sessions in one process at 100 ms model latency, each its own team doing
   tasks of two model calls, all metered into one ledger on disk. For huddle group chats (planner, tool executor,
   responder), huddle two-step pipelines and vanilla two-agent ``RoundRobinGroupChat`` s: every session's first
   task all at once (it also opens the connections), the next all at once (the process's capacity: one core's worth,
   CPU per call x calls, and the overhead is the queue for that CPU), then tasks arriving as a Poisson process at 25,
   50 and 100 per second (200 open chats whose users each write every 8, 4 or 2 s; 2 tasks per session, a session
   answering one at a time). Group chats also run at 50 per second before ``gc.freeze()``, which README's "Hosting
   many sessions" mentions for after start-up and every later row uses. A task's overhead is its wall time minus two
   model calls as a bare HTTP client sees them (the server's 100 ms delay plus its own HTTP handling, measured
   first). Goal: p95 overhead <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import gc
import itertools
import json
import math
import os
import pstats
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import ChatAgent, TaskResult, Team
from autogen_agentchat.conditions import MaxMessageTermination, SourceMatchTermination
from autogen_agentchat.messages import BaseChatMessage
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat
from autogen_core import FunctionCall
from autogen_core.models import ChatCompletionClient, CreateResult, ModelInfo, RequestUsage
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_ext.models.replay import ReplayChatCompletionClient

from huddle.config.settings import Settings, load_settings
from huddle.models.factory import AGENT_HEADER, model_info_for
from huddle.teams.base import Team as HuddleTeam
from huddle.teams.base import build_team
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.kinds import PatternSpec
from huddle.teams.spec import TeamSpec
from huddle.testing import RecordedRequest, Reply, Rule, ScriptedServer, ToolCall
from huddle.usage import UsageLedger

USAGE = (40, 10)  # reported by the server, so it spends no time counting tokens
PLAN = json.dumps(
    {
        "goal": "compute",
        "steps": [
            {
                "id": 1,
                "assignee": "tool_executor",
                "instruction": "compute it",
                "tool": "calculator",
                "args": json.dumps({"expression": "17*23"}),
                "depends_on": [],
            }
        ],
        "done": False,
    }
)
CHAT_TEAM = TeamSpec.model_validate(
    {
        "team": {"name": "assistant", "max_turns": 8},
        "agents": [{"role": "planner"}, {"role": "tool_executor", "tools": ["calculator"]}, {"role": "responder"}],
    }
)
ROOT = Path(__file__).resolve().parent.parent
BLOCKS = 5
REPLAYS = 100_000  # replies each in-process client holds (more than any run asks for)
REPLAY_INFO = ModelInfo(vision=False, function_calling=True, json_output=True, structured_output=True, family="unknown")
PIPELINE = [f"m{i}" for i in range(1, 5)]
FAN_OUT = [f"w{i}" for i in range(1, 9)]
SPEAKERS = ("user", "planner", "tool_executor", "responder")
NEXT_SPEAKER = {"user": "planner", "planner": "tool_executor", "tool_executor": "responder"}
GOAL_P95_MS = 20
RATES = (25, 50, 100)  # tasks per second arriving at the 200 sessions
ARRIVING_TASKS = 2  # tasks each session answers in a row at a rate (400 samples for a p95)


# --- the server (child process) -----------------------------------------------------------------------------------


def scripted(request: RecordedRequest) -> Reply:
    """Every agent's scripted answer, after the latency the profile's model name asks for (``lat300``: 300 ms)."""
    delay = int(request.model.removeprefix("lat") or 0) / 1000
    agent = request.agent or ""
    if agent == "manager":  # vanilla SelectorGroupChat's speaker selection: the next one in the fixed order
        text = "\n".join(str(m.get("content")) for m in request.messages)
        spoken = re.findall(rf"^({'|'.join(SPEAKERS)}):", text, flags=re.M)
        return Reply(
            content=NEXT_SPEAKER.get(spoken[-1] if spoken else "user", "responder"), usage=USAGE, delay_s=delay
        )
    if agent == "planner":
        return Reply(content=PLAN, usage=USAGE, delay_s=delay)
    if agent == "tool_executor":
        if request.last_role == "tool":
            return Reply(content="done", usage=USAGE, delay_s=delay)
        call = ToolCall(name="calculator", arguments={"expression": "17*23"})
        return Reply(tool_calls=[call], usage=USAGE, delay_s=delay)
    if agent == "responder":
        return Reply(content="17*23 = 391.", usage=USAGE, delay_s=delay)
    return Reply(content=f"{agent} did its part.", usage=USAGE, delay_s=delay)


def serve() -> None:
    """Child process: print the base URL, then answer ``count`` (chat requests so far) and ``reset`` on stdin."""
    with ScriptedServer([Rule(reply=scripted)]) as server:
        print(server.base_url, flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                print(len(server.chat_requests), flush=True)
            elif line.strip() == "reset":
                server.reset()
                print("ok", flush=True)


class RemoteServer:
    """The scripted server in a child process, so its threads use neither this process's CPU time nor its GIL."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.base_url = self.proc.stdout.readline().strip()

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def calls(self) -> int:
        return int(self.ask("count"))

    @functools.cached_property
    def model_s(self) -> float:
        """The 100 ms model's latency as a bare HTTP client sees it, measured on first use."""
        return self.round_trip("lat100")

    def round_trip(self, model: str, n: int = 30) -> float:
        """The model's latency as a bare HTTP client sees it (seconds, median of `n` requests 50 ms apart): the
        server's delay plus its own HTTP handling, which no framework can avoid."""
        times = []
        with httpx2.Client(base_url=self.base_url) as client:
            for _ in range(n):
                time.sleep(0.05)
                started = time.perf_counter()
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
                client.post("/chat/completions", json=body, headers={AGENT_HEADER: "responder"}).raise_for_status()
                times.append(time.perf_counter() - started)
        return statistics.median(times)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


# --- the teams -----------------------------------------------------------------------------------------------------


def settings_for(server: RemoteServer, home: Path) -> Settings:
    profiles = "".join(
        f"  {name}: {{model: {name}, base_url: '{server.base_url}', max_retries: 0}}\n"
        for name in ("lat0", "lat100", "lat300")
    )
    replay = f"  replay: {{provider: scripted, model: replay, replies: {json.dumps([PLAN] * REPLAYS)}}}\n"
    (home / "huddle.yaml").write_text(f"models:\n{profiles}{replay}")
    return load_settings(home / "huddle.yaml")


def vanilla_client(settings: Settings, profile: str, agent: str) -> OpenAIChatCompletionClient:
    """autogen-ext's client as a vanilla user builds it (the header only tells the scripted server who asks)."""
    spec = settings.profile(profile)
    return OpenAIChatCompletionClient(
        model=spec.model_name,
        base_url=str(spec.base_url),
        api_key="not-needed",
        model_info=model_info_for(spec),
        max_retries=0,
        default_headers={AGENT_HEADER: agent},
    )


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression (the vanilla tool executor's tool)."""
    return str(eval(expression, {"__builtins__": {}}))  # the bench's own fixed expression


ClientFor = Callable[[str], ChatCompletionClient]  # agent name -> its model client


def over_http(settings: Settings, profile: str) -> ClientFor:
    return lambda agent: vanilla_client(settings, profile, agent)


def in_process(agent: str) -> ChatCompletionClient:
    """autogen's own replay client, answering like the scripted server but with no HTTP (nor openai SDK) at all."""
    replies: list[str | CreateResult] = [{"planner": PLAN, "responder": "17*23 = 391."}.get(agent, f"{agent} did it.")]
    if agent == "manager":  # SelectorGroupChat's choices, in the fixed order
        replies = list(SPEAKERS[1:])
    elif agent == "tool_executor":
        call = FunctionCall(id="call_1", name="calculator", arguments=json.dumps({"expression": "17*23"}))
        replies = [
            CreateResult(finish_reason="function_calls", content=[call], usage=RequestUsage(*USAGE), cached=False)
        ]
    return ReplayChatCompletionClient(replies * REPLAYS, model_info=REPLAY_INFO)


def vanilla_chat(client: ClientFor, selector: bool) -> Team:
    """planner -> tool_executor -> responder in vanilla autogen: model-selected, or round-robin."""
    agents: list[ChatAgent | Team] = [
        AssistantAgent("planner", client("planner"), system_message="Plan the task."),
        AssistantAgent(
            "tool_executor",
            client("tool_executor"),
            tools=[FunctionTool(calculator, description="Evaluate arithmetic.")],
            system_message="Run the tools the plan needs.",
        ),
        AssistantAgent("responder", client("responder"), system_message="Answer."),
    ]
    end = SourceMatchTermination(["responder"]) | MaxMessageTermination(8)
    if selector:
        return SelectorGroupChat(agents, model_client=client("manager"), termination_condition=end)
    return RoundRobinGroupChat(agents, termination_condition=end)


def vanilla_pipeline(client: ClientFor, size: int = len(PIPELINE)) -> Team:
    agents: list[ChatAgent | Team] = [
        AssistantAgent(name, client(name), system_message=f"You are {name}.") for name in PIPELINE[:size]
    ]
    return RoundRobinGroupChat(agents, max_turns=size)


def pattern(kind: str, names: Sequence[str], profile: str, **team: Any) -> PatternSpec:
    agents = [{"name": n, "instruction": f"You are {n}.", "model": profile} for n in names]
    return PatternSpec.model_validate({"team": {"name": kind, "kind": kind, **team}, "agents": agents})


# --- 1. CPU per turn --------------------------------------------------------------------------------------------------


@dataclass
class CpuRow:
    label: str
    turns: int
    calls: int
    build_ms: float
    per_turn_ms: float  # the median of the blocks' CPU per turn (the machine may be busy with other work)
    per_call_ms: float


def turns_of(messages: Sequence[Any]) -> int:
    """Agent turns: chat messages not from the user."""
    return sum(1 for m in messages if isinstance(m, BaseChatMessage) and m.source != "user")


def huddle_turns(messages: Sequence[Any]) -> int:
    return sum(1 for m in messages if m.source != "user")


async def measure(
    label: str,
    server: RemoteServer | None,
    build: Callable[[], Any],
    run_task: Callable[[Any, str], Awaitable[int]],
    n: int,
) -> CpuRow:
    """Build once (timed apart), warm up, then run `n` tasks one after another in 5 blocks, taking each block's
    process CPU time; the median block stands for the team, so a burst of other work on the machine does not.
    Without a `server` (an in-process model) there are no HTTP calls to count."""

    def served() -> int:
        return server.calls() if server is not None else 0

    started = time.process_time()
    team = build()
    build_ms = 1000 * (time.process_time() - started)
    for i in range(5):
        await run_task(team, f"warm-up {i}")
    turns, calls, per_turn, per_call = 0, 0, [], []
    for block in range(BLOCKS):
        before, block_turns, started = served(), 0, time.process_time()
        for i in range(n // BLOCKS):
            block_turns += await run_task(team, f"What is 17*23? ({block}.{i})")
        cpu_ms = 1000 * (time.process_time() - started)
        block_calls = served() - before
        turns, calls = turns + block_turns, calls + block_calls
        per_turn.append(cpu_ms / block_turns)
        per_call.append(cpu_ms / block_calls if block_calls else math.nan)
    close = getattr(team, "close", None)
    if close is not None:
        await close()
    return CpuRow(label, turns, calls, build_ms, statistics.median(per_turn), statistics.median(per_call))


async def run_huddle(team: HuddleTeam, task: str) -> int:
    return huddle_turns((await team.run(task)).messages)


async def run_vanilla(team: Team, task: str) -> int:
    result = await team.run(task=task)
    assert isinstance(result, TaskResult)
    await team.reset()  # each task starts afresh, as each huddle run starts a fresh plan
    return turns_of(result.messages)


async def cpu_section(server: RemoteServer, settings: Settings, n: int) -> list[CpuRow]:
    """The five teams over HTTP to the scripted server, then the same teams on an in-process model (no openai SDK,
    no HTTP): what the frameworks themselves cost per turn."""
    over = await cpu_rows("", server, over_http(settings, "lat0"), settings, "lat0", n)
    return over + await cpu_rows(", in-process", None, in_process, settings, "replay", n)


async def cpu_rows(
    suffix: str, server: RemoteServer | None, client: ClientFor, settings: Settings, profile: str, n: int
) -> list[CpuRow]:
    chat_settings = settings.model_copy(update={"model": profile})
    return [
        await measure(f"vanilla SelectorGroupChat{suffix}", server, lambda: vanilla_chat(client, True), run_vanilla, n),
        await measure(
            f"vanilla RoundRobinGroupChat{suffix}", server, lambda: vanilla_chat(client, False), run_vanilla, n
        ),
        await measure(
            f"huddle group_chat{suffix}", server, lambda: GroupChatTeam(CHAT_TEAM, chat_settings), run_huddle, n
        ),
        await measure(
            f"vanilla RoundRobinGroupChat x4{suffix}", server, lambda: vanilla_pipeline(client), run_vanilla, n
        ),
        await measure(
            f"huddle sequential x4{suffix}",
            server,
            lambda: build_team(pattern("sequential", PIPELINE, profile), settings),
            run_huddle,
            n,
        ),
    ]


def print_cpu(rows: Sequence[CpuRow]) -> None:
    print(
        "1. framework CPU per turn at zero model latency (client process only, the server runs in another process;"
        f" median of {BLOCKS} blocks); then the same teams on an in-process model: the frameworks alone"
    )
    print(
        f"   {'team':46} {'turns':>6} {'calls':>6} {'CPU ms/turn':>12} {'CPU ms/call':>12} {'build ms':>9}"
        f" {'x vanilla':>10}"
    )
    for i, row in enumerate(rows):
        group = rows[i - i % 5 : i - i % 5 + 5]  # over HTTP, then in-process: five rows each
        baselines = {2: group[:2], 4: group[3:4]}.get(i % 5, [])
        versus = " / ".join(f"{row.per_turn_ms / b.per_turn_ms:.2f}" for b in baselines)
        calls = f"{row.calls:6}" if row.calls else f"{'-':>6}"
        per_call = f"{row.per_call_ms:12.2f}" if row.calls else f"{'-':>12}"
        print(
            f"   {row.label:46} {row.turns:6} {calls} {row.per_turn_ms:12.2f} {per_call} {row.build_ms:9.1f}"
            f" {versus:>10}"
        )
    print("   (x vanilla: huddle group_chat vs Selector / RoundRobin; huddle sequential vs RoundRobin x4)")


async def profiled(label: str, work: Callable[[], Awaitable[Any]]) -> None:
    """Where a run's CPU goes: cProfile's own time by package (a C function's time goes to the package calling it)."""
    profiler = cProfile.Profile()
    profiler.enable()
    await work()
    profiler.disable()
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    by_package: dict[str, float] = {}
    for (path, _, _), (_, _, own, _, callers) in stats.items():
        if path == "~" and callers:  # a builtin: charge its time to whoever called it
            for (caller_path, _, _), (_, _, own_here, _) in callers.items():
                by_package[package_of(caller_path)] = by_package.get(package_of(caller_path), 0.0) + own_here
        else:
            by_package[package_of(path)] = by_package.get(package_of(path), 0.0) + own
    total = sum(by_package.values())
    top = sorted(by_package.items(), key=lambda kv: -kv[1])[:10]
    print(f"   {label}: " + ", ".join(f"{name} {100 * t / total:.0f}%" for name, t in top))


def package_of(path: str) -> str:
    """``openai``, ``asyncio``, ``huddle.tracing``, ... for a code path."""
    file = Path(path)
    if path.startswith(("~", "<")):
        return "builtins"
    try:
        inside = file.resolve().relative_to(ROOT)
    except ValueError:
        parts = file.parts
        if "site-packages" in parts:
            return parts[parts.index("site-packages") + 1].removesuffix(".py")
        python = next((i for i, p in enumerate(parts) if p.startswith("python3")), None)
        return parts[python + 1].removesuffix(".py") if python is not None and python + 1 < len(parts) else path
    if inside.parts[0] == "huddle" and len(inside.parts) > 1:
        return "huddle." + inside.parts[1].removesuffix(".py")
    return "huddle." + inside.parts[0]


# --- 2. fan-out ------------------------------------------------------------------------------------------------------


async def fan_out_section(settings: Settings, repeats: int) -> None:
    print(
        "\n2. fan-out latency: 8 members at 300 ms model latency (median of "
        f"{repeats} runs; slowest call as the ledger measured it, in the same run)"
    )
    for label, spec in (
        ("huddle parallel x8", pattern("parallel", FAN_OUT, "lat300")),
        ("huddle sequential x8 (for contrast)", pattern("sequential", FAN_OUT, "lat300")),
    ):
        ledger = UsageLedger()
        team = build_team(spec, settings, ledger=ledger)
        await team.run("warm-up")
        walls, slowest = [], []
        for i in range(repeats if "parallel" in label else 1):
            started = time.perf_counter()
            result = await team.run(f"fan out {i}")
            walls.append(time.perf_counter() - started)
            slowest.append(max(r.latency_s for r in ledger.records(run_id=result.run_id)))
        await team.close()
        wall, slow = statistics.median(walls), statistics.median(slowest)
        goal = "  (goal <= 1.20)" if "parallel" in label else ""
        print(
            f"   {label:36} wall {1000 * wall:7.0f} ms   slowest call {1000 * slow:5.0f} ms   "
            f"ratio {wall / slow:5.2f}{goal}"
        )


# --- 3. concurrent sessions -------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Session = Callable[[str], Awaitable[Any]]  # runs one task of one session


async def session_round(
    server: RemoteServer,
    sessions: Sequence[Session],
    label: str,
    rate: float | None,
    *,
    seed: int = 0,
    tasks_each: int = 1,
) -> None:
    """`tasks_each` tasks per session, all at once (`rate` None) or arriving as one Poisson process of `rate` per
    second (seeded exponential gaps: bursts happen, as with real users), dealt to the sessions in turn; a session
    takes its next task once it has answered the last, as a chat user would. A task's overhead is its wall time
    minus its two model calls' latency as a bare client sees it (``server.model_s``)."""
    rng = random.Random(seed)
    model_s = server.model_s
    total = len(sessions) * tasks_each
    arrivals = list(itertools.accumulate(rng.expovariate(rate) for _ in range(total))) if rate else [0.0] * total
    in_flight, peak, overhead = 0, 0, []
    began = time.perf_counter()

    async def chat(first: int, session: Session) -> None:
        nonlocal in_flight, peak
        for i in range(first, total, len(sessions)):
            await asyncio.sleep(max(0.0, began + arrivals[i] - time.perf_counter()))
            in_flight += 1
            peak = max(peak, in_flight)
            started = time.perf_counter()
            await session(f"task {i}")
            in_flight -= 1
            overhead.append(1000 * (time.perf_counter() - started - 2 * model_s))

    before, cpu_before = server.calls(), time.process_time()
    await asyncio.gather(*(chat(i, s) for i, s in enumerate(sessions)))
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_before
    calls = server.calls() - before
    p95 = percentile(overhead, 0.95)
    print(
        f"   {label:48} {total / elapsed:4.0f} tasks/s {calls / elapsed:4.0f} calls/s  peak {peak:3} in"
        f" flight  CPU {1000 * cpu / calls:5.2f} ms/call  overhead p50 {percentile(overhead, 0.5):5.0f}"
        f"  p95 {p95:5.0f} ms{'  (goal met)' if p95 <= GOAL_P95_MS else ''}"
    )


def built(label: str, count: int, make: Callable[[int], Any]) -> list[Any]:
    """`count` teams, reporting the CPU time their construction took."""
    started = time.process_time()
    teams = [make(i) for i in range(count)]
    print(f"   ({label}: building {count} teams took {time.process_time() - started:.1f} s CPU, not timed below)")
    return teams


@contextmanager
def frozen_heap() -> Iterator[None]:
    """What README's "Hosting many sessions" mentions for a host that has started: move the start-up heap (modules,
    built teams) out of the garbage collector's sight, so a full collection does not walk it (measured: no gain)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def load_rows(
    server: RemoteServer, label: str, runs: Sequence[Session], rates: Sequence[int], *, first_done: bool = False
) -> None:
    """The first task of every session (it opens the connections), then all at once again (the process's capacity),
    then Poisson arrivals at each rate: 200 open sessions whose users each write every 200/rate seconds."""
    if not first_done:
        await session_round(server, runs, f"{label}, all at once (1st task)", None)
    await session_round(server, runs, f"{label}, all at once (next task)", None)
    for rate in rates:
        every = len(runs) / rate
        row = f"{label}, {rate}/s (each writes every {every:.0f} s)"
        await session_round(server, runs, row, rate, seed=rate, tasks_each=ARRIVING_TASKS)


async def sessions_section(server: RemoteServer, settings: Settings, count: int) -> None:
    print(
        f"\n3. {count} sessions in one process at 100 ms model latency, 2 model calls per task (goal: p95 overhead <="
        f" {GOAL_P95_MS} ms); the ledger on disk, as in use; gc.freeze() after start-up, except the"
        " first two rows"
    )
    print(
        f"   (the model's latency as a bare HTTP client sees it: {1000 * server.model_s:.1f} ms a call, the server's"
        " 100 ms delay plus its own HTTP handling; a task's overhead is its wall time minus two of these)"
    )
    latency = settings.model_copy(update={"model": "lat100"})
    ledger = UsageLedger(settings.ledger_path)
    chats = built(
        "huddle group_chat", count, lambda i: GroupChatTeam(CHAT_TEAM, latency, ledger=ledger, session_id=f"s{i}")
    )
    runs: list[Session] = [team.run for team in chats]
    await session_round(server, runs, "huddle group_chat, all at once (1st task)", None)
    await session_round(server, runs, "huddle group_chat, 50/s, no gc.freeze", 50, seed=1, tasks_each=ARRIVING_TASKS)
    with frozen_heap():
        await load_rows(server, "huddle group_chat", runs, RATES, first_done=True)
        await asyncio.gather(*(t.close() for t in chats))
        two = pattern("sequential", PIPELINE[:2], "lat100")
        pipes = built(
            "huddle sequential x2", count, lambda i: build_team(two, settings, ledger=ledger, session_id=f"p{i}")
        )
        await load_rows(server, "huddle sequential x2", [p.run for p in pipes], RATES)
        await asyncio.gather(*(p.close() for p in pipes))
        client = over_http(settings, "lat100")
        vanilla = built("vanilla RoundRobinGroupChat x2", count, lambda i: vanilla_pipeline(client, 2))
        runs = [functools.partial(run_vanilla, team) for team in vanilla]
        await load_rows(server, "vanilla RoundRobin x2", runs, RATES)


# --- main ------------------------------------------------------------------------------------------------------------


@contextmanager
def scratch_home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HUDDLE_HOME"] = str(Path(tmp) / "data")
        os.environ.pop("HUDDLE_CONFIG", None)
        yield Path(tmp)


async def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    server = RemoteServer()
    try:
        with scratch_home() as home:
            settings = settings_for(server, home)
            rows = await cpu_section(server, settings, args.tasks)
            print_cpu(rows)
            chat_team = GroupChatTeam(CHAT_TEAM, settings.model_copy(update={"model": "lat0"}))
            pipeline = build_team(pattern("sequential", PIPELINE, "lat0"), settings)
            print("   where huddle's CPU goes (cProfile, 100 tasks each):")
            await profiled("group_chat", lambda: run_many(chat_team, 100))
            await profiled("sequential x4", lambda: run_many(pipeline, 100))
            await chat_team.close()
            await pipeline.close()
            await fan_out_section(settings, args.repeats)
            await sessions_section(server, settings, args.sessions)
    finally:
        server.close()
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


async def run_many(team: HuddleTeam, n: int) -> None:
    for i in range(n):
        await team.run(f"task {i}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks per team for the CPU measurement")
    parser.add_argument("--repeats", type=int, default=5, help="fan-out runs")
    parser.add_argument("--sessions", type=int, default=200, help="concurrent sessions")
    asyncio.run(main(parser.parse_args()))
