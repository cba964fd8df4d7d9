"""Faults through the real CLI: every ``huddle run`` process ends with an answer or one ``error:`` line, in time.

Run: ``python bench/faults_cli.py [--runs 3] [--garbage 100] [--kills 30]``. Four parts, each bounded, all against
scripted servers in this process (``bench/faults.py`` measures pass rates in-process; this one watches what a user
sees, so every run is its own ``huddle run`` process, two at a time):

1. fault rates 0.2 / 0.5 / 0.9 (429, 500, timeouts, cut streams, malformed tool JSON) on every team kind;
2. garbage model replies (invalid plans, huge replies, unknown tools, wrong argument types, empty content);
3. 10 ``huddle run`` processes at once on one data dir (no ``database is locked`` may reach the user);
4. ``kill -9`` of ``huddle run --session`` at random moments, then ``--resume``: the session opens and the usage
   ledger holds one row per request the model server received.

A row counts attempts, survived (exit 0 with an answer), errors (exit 1 with an ``error:`` line: a clear failure),
lost (anything else: exit 0 without an answer, no ``error:`` line, another exit code), tracebacks and hangs (past
the bound, killed). Why a process is kept per run: tracebacks and exit codes are what the CLI shows, not the API.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from assistant_tasks import TASKS, server_rules

from huddle.testing import Fault, RecordedRequest, Reply, Rule, ScriptedServer, ToolCall

PATTERNS = Path(__file__).resolve().parent.parent / "examples" / "patterns"
KINDS = {
    "group_chat": "assistant",
    "sequential": str(PATTERNS / "sequential.yaml"),
    "parallel": str(PATTERNS / "parallel.yaml"),
    "hierarchical": str(PATTERNS / "hierarchical.yaml"),
    "event_driven": str(PATTERNS / "event_driven.yaml"),
}
PATTERN_TASK = "Order 1042: the lamp (80 euro) arrived broken; customer 42 wants a refund."
FAULTS = [
    Fault(kind="rate_limit", retry_after=0.05),
    Fault(kind="server_error"),
    Fault(kind="timeout", delay_s=1.0),
    Fault(kind="cut_stream"),
    Fault(kind="malformed_tool_json"),
]
BOUND_S = 90.0  # a run past this is a hang: retries x timeout x calls stays far below it
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Tally:
    """One table row: how the processes of one part ended."""

    attempts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    tracebacks: list[str] = field(default_factory=list)

    def add(self, label: str, proc: Proc) -> None:
        self.attempts += 1
        self.outcomes[proc.outcome] += 1
        if proc.outcome == "error":
            self.errors[re.sub(r"\d+", "N", proc.stderr.strip().splitlines()[-1])[:140]] += 1
        if proc.outcome == "traceback":
            self.tracebacks.append(f"== {label}\n{proc.stdout}\n{proc.stderr}")
        if proc.outcome in {"lost", "traceback", "hang"} or proc.locked:
            locked = " (database is locked)" if proc.locked else ""
            self.failures.append(f"{label}: {proc.outcome}{locked}: {proc.tail}")


@dataclass
class Proc:
    """How one ``huddle run`` process ended."""

    rc: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def locked(self) -> bool:
        return "database is locked" in self.stdout + self.stderr

    @property
    def outcome(self) -> str:
        text = self.stdout + self.stderr
        if self.rc is None:
            return "hang"
        if TRACEBACK in text:
            return "traceback"
        if self.rc == 0 and self.stdout.strip():
            return "survived"
        if self.rc == 1 and re.search(r"^error: \S", self.stderr, flags=re.M):
            return "error"
        return "lost"

    @property
    def tail(self) -> str:
        lines = (self.stderr.strip() or self.stdout.strip() or f"exit {self.rc}, no output").splitlines()
        return f"exit {self.rc}, {self.seconds:.1f} s: " + " | ".join(line[:160] for line in lines[-3:])


def huddle(env: dict[str, str], *args: str, bound: float = BOUND_S) -> Proc:
    """``huddle ARGS`` in its own process; past `bound` it is killed and reported as a hang (rc None)."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "huddle", *args], env=env, capture_output=True, text=True, timeout=bound
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return Proc(None, out, err, time.perf_counter() - started)
    return Proc(done.returncode, done.stdout, done.stderr, time.perf_counter() - started)


def environment(home: Path, server: ScriptedServer, retries: int = 2) -> dict[str, str]:
    """A data dir and a config whose profile retries and then falls back to a second profile on the same server."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "huddle.yaml"
    config.write_text(
        f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: {retries},"
        " timeout_s: 0.5, fallback: backup}\n"
        f"  backup: {{model: scripted-backup, base_url: '{server.base_url}', max_retries: {retries},"
        " timeout_s: 0.5}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUDDLE_")}
    return env | {"HUDDLE_HOME": str(home / "data"), "HUDDLE_CONFIG": str(config), "NO_COLOR": "1"}


def pattern_reply(request: RecordedRequest) -> Reply:
    """Any member of a pattern team: a manager delegates to each listed worker, a planner plans nothing, others echo."""
    if "Reply with JSON only" in request.system_text:
        workers = re.findall(r"^- ([A-Za-z][\w-]*): ", request.system_text, flags=re.M)
        return Reply(content=json.dumps({"assignments": [{"worker": w, "task": request.last_text} for w in workers]}))
    if request.agent == "planner":
        return Reply(content='{"goal": "answer", "steps": [], "done": true}')
    if request.agent == "manager":
        return Reply(content="responder")
    return Reply(content=f"topic: order_approved\n{request.agent} handled: {request.last_text[:80]}")


def garbage(rng: random.Random) -> Reply:
    """One reply a broken or hostile model could send, of any agent's request."""
    choices: list[Callable[[], Reply]] = [
        lambda: Reply(content="not json {"),
        lambda: Reply(content='{"goal": 1, "steps": "many", "done": "no"}'),
        lambda: Reply(content='{"goal": "g", "steps": [{"id": 1, "assignee": "nobody", "depends_on": [1]}]}'),
        lambda: Reply(content="[1, 2, 3]"),
        lambda: Reply(content='{"assignments": [{"worker": "ghost", "task": null}]}'),
        lambda: Reply(content="x" * rng.choice([100_000, 1_000_000])),
        lambda: Reply(tool_calls=[ToolCall(name="rm_rf", arguments={"path": "/"})]),
        lambda: Reply(tool_calls=[ToolCall(name="calculator", arguments={"expression": 17})]),
        lambda: Reply(tool_calls=[ToolCall(name="calculator", arguments="[1, 2]")]),
        lambda: Reply(tool_calls=[ToolCall(name="calculator", arguments={"expr": "1+1", "extra": [None]})]),
        lambda: Reply(content=""),
        lambda: Reply(content=None),
        lambda: Reply(content="   \n\t "),
        lambda: Reply(content="\x00\x1b[2J\u202e@responder"),
        lambda: Reply(content="Bob", finish_reason="length"),
        lambda: Reply(content="ok", usage=(0, 10_000_000)),
    ]
    return rng.choice(choices)()


def part(
    title: str, server: ScriptedServer, runs: list[tuple[str, dict[str, str], list[str]]], workers: int = 2
) -> tuple[str, Tally, int]:
    """Run each (label, env, args) as a process, `workers` at a time; the tally and the requests the server saw."""
    before = len(server.chat_requests)
    tally = Tally()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (label, _, _), proc in zip(runs, pool.map(lambda r: huddle(r[1], *r[2]), runs), strict=True):
            tally.add(label, proc)
    return title, tally, len(server.chat_requests) - before


def fault_rates(tmp: Path, runs: int) -> list[tuple[str, Tally, int]]:
    rows = []
    for rate in (0.2, 0.5, 0.9):
        for kind, team in KINDS.items():
            rules = server_rules() if kind == "group_chat" else [Rule(reply=pattern_reply)]
            with ScriptedServer(rules=rules, fault_rate=rate, fault_kinds=FAULTS, seed=int(rate * 10)) as server:
                env = environment(tmp / f"{kind}-{rate}", server)
                task = TASKS[0].text if kind == "group_chat" else PATTERN_TASK
                todo = [(f"{kind} @ {rate}", env, ["run", "--no-cache", "-q", "--team", team, task])] * runs
                rows.append(part(f"faults {rate:.0%} {kind}", server, todo))
    return rows


def garbage_replies(tmp: Path, count: int) -> tuple[str, Tally, int]:
    rng = random.Random(15)
    with ScriptedServer(rules=[Rule(reply=lambda _: garbage(rng))]) as server:
        env = environment(tmp / "garbage", server, retries=0)
        todo = []
        for i in range(count):
            kind, team = list(KINDS.items())[i % len(KINDS)]
            task = TASKS[i % len(TASKS)].text if kind == "group_chat" else PATTERN_TASK
            todo.append((f"garbage #{i} {kind}", env, ["run", "--no-cache", "-q", "--team", team, task]))
        return part(f"garbage replies ({len(KINDS)} kinds)", server, todo)


def concurrent_runs(tmp: Path) -> tuple[str, Tally, int]:
    with ScriptedServer(rules=server_rules()) as server:
        env = environment(tmp / "concurrent", server)
        todo = [(f"concurrent #{i}", env, ["run", "--no-cache", "-q", TASKS[i % len(TASKS)].text]) for i in range(10)]
        return part("10 runs at once, one data dir", server, todo, workers=10)


def slowed(rules: list[Rule], delay_s: float) -> list[Rule]:
    """The same rules, each reply after `delay_s`, so a kill lands before, during and after model calls."""

    def late(reply: object) -> Callable[[RecordedRequest], Reply]:
        def answer(request: RecordedRequest) -> Reply:
            base = reply(request) if callable(reply) else reply
            assert isinstance(base, Reply)
            return base.model_copy(update={"delay_s": delay_s})

        return answer

    return [rule.model_copy(update={"reply": late(rule.reply)}) for rule in rules]


def ledger_calls(env: dict[str, str], session: str) -> int:
    path = Path(env["HUDDLE_HOME"]) / "usage.sqlite"
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT COUNT(*) FROM usage WHERE session_id = ? AND cached = 0", (session,)).fetchone()
    return int(row[0])


def kills(tmp: Path, count: int) -> tuple[str, Tally, int, list[str]]:
    """Kill -9 ``huddle run --session`` at a random moment, then ``--resume``; compare ledger rows and requests."""
    rng = random.Random(9)
    mismatches: list[str] = []
    tally = Tally()
    with ScriptedServer(rules=slowed(server_rules(), 0.15)) as server:
        env = environment(tmp / "kills", server)
        start = len(server.chat_requests)
        for i in range(count):
            session, task = f"s{i}", TASKS[i % len(TASKS)].text
            before = len(server.chat_requests)
            child = subprocess.Popen(
                [sys.executable, "-m", "huddle", "run", "--no-cache", "-q", "--session", session, task],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(1.0, 5.0))  # start-up takes ~2 s; a full turn ~4 s
            child.send_signal(signal.SIGKILL)
            child.wait()
            time.sleep(0.2)  # let the server finish answering the request the killed process left
            resumed = huddle(env, "run", "--no-cache", "-q", "--session", session, "--resume")
            if resumed.outcome == "error" and "nothing to run" in resumed.stderr:
                resumed = Proc(0, "(nothing to resume: the turn finished or never started)", "", resumed.seconds)
            tally.add(f"kill #{i}", resumed)
            requests, rows = len(server.chat_requests) - before, ledger_calls(env, session)
            if requests != rows:
                mismatches.append(f"kill #{i} (session {session}): server got {requests} requests, ledger {rows}")
        return "kill -9 + --resume", tally, len(server.chat_requests) - start, mismatches


def main(runs: int, garbage_count: int, kill_count: int, log: Path | None) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        rows = [*fault_rates(tmp, runs), garbage_replies(tmp, garbage_count), concurrent_runs(tmp)]
        title, tally, requests, mismatches = kills(tmp, kill_count)
        rows.append((title, tally, requests))
    header = ("attempts", "survived", "errors", "lost", "tracebacks", "hangs", "requests")
    print(f"{'':34} " + " ".join(f"{h:>10}" for h in header))
    for title, t, requests in rows:
        o = t.outcomes
        values = (t.attempts, o["survived"], o["error"], o["lost"], o["traceback"], o["hang"], requests)
        print(f"{title:34} " + " ".join(f"{v:>10}" for v in values))
    print(f"ledger rows vs server requests after kill -9: {kill_count - len(mismatches)}/{kill_count} match")
    print(f"total {time.perf_counter() - started:.0f} s")
    print("\nclear errors (error: lines, digits as N):")
    for title, t, _ in rows:
        for line, n in t.errors.most_common():
            print(f"  {title}: {n}x {line}")
    if log is not None:
        log.write_text("\n".join(tb for _, t, _ in rows for tb in t.tracebacks))
    failures = [f for _, t, _ in rows for f in t.failures] + mismatches
    if failures:
        print(f"\n{len(failures)} failures:")
        for failure in failures:
            print(f"  {failure}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs per fault rate and team kind")
    parser.add_argument("--garbage", type=int, default=100, help="runs with garbage model replies")
    parser.add_argument("--kills", type=int, default=30, help="kill -9 moments")
    parser.add_argument("--log", type=Path, help="write every traceback in full to this file")
    options = parser.parse_args()
    main(options.runs, options.garbage, options.kills, options.log)
