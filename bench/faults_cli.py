"""Faults through the real CLI: every ``huddle run`` process ends with an answer or one ``error:`` line, in time.

Run: ``python bench/faults_cli.py [--runs 3] [--garbage 100] [--kills 30] [--pairs 6] [--only kills,pairs]``. Five
parts, each bounded, all against scripted servers in this process (``bench/faults.py`` measures pass rates in-process;
this one watches what a user sees, so every run is its own ``huddle`` process, two at a time):

1. fault rates 0.2 / 0.5 / 0.9 (429, 500, timeouts, cut streams, malformed tool JSON) on every team kind;
2. garbage model replies (invalid plans, huge replies, unknown tools, wrong argument types, empty content);
3. 10 ``huddle run`` processes at once on one data dir (no ``database is locked`` may reach the user);
4. ``kill -9`` of ``huddle run --session`` and ``huddle chat --session`` at random moments, then a resume: every
   acknowledged message saved exactly once, the session opens, one ledger row per request the server received
   (`kills`);
5. two processes on one session id at once: one answers, the other answers or says the session is busy (`pairs`).

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
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
PARTS = ("faults", "garbage", "concurrent", "kills", "pairs")


@dataclass
class Tally:
    """One table row: how the processes of one part ended."""

    attempts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    tracebacks: list[str] = field(default_factory=list)
    moments: Counter[str] = field(default_factory=Counter)  # where the kills landed (the kill part only)

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


def ledger_mismatch(env: dict[str, str], session: str, requests: int) -> str | None:
    """How the session's ledger rows disagree with the `requests` the server got, or None.

    A call is written before it is sent: a process killed between that write and the send leaves an ``interrupted``
    row for a request the server may never have received, so those rows bound the count from above. Settled rows
    must each be a request the server answered.
    """
    path = Path(env["HUDDLE_HOME"]) / "usage.sqlite"
    with sqlite3.connect(path) as db:
        settled, interrupted = db.execute(
            "SELECT COALESCE(SUM(state = 'done'), 0), COALESCE(SUM(state != 'done'), 0) FROM usage"
            " WHERE session_id = ? AND cached = 0",
            (session,),
        ).fetchone()
    if settled <= requests <= settled + interrupted:
        return None
    return f"server got {requests} requests, ledger {settled} settled + {interrupted} interrupted"


def turns_of(env: dict[str, str], session: str) -> list[dict[str, Any]]:
    """The session's turns as ``huddle sessions show ID --json`` prints them ([] when it has none)."""
    shown = huddle(env, "sessions", "show", session, "--json")
    return json.loads(shown.stdout) if shown.rc == 0 else []


def saved_counts(turns: list[dict[str, Any]], message: str) -> tuple[int, int]:
    """How often `message` is a turn's task, and how often it is a user message among the turns' saved messages."""
    tasks = sum(t["task"] == message for t in turns)
    said = sum(m.get("source") == "user" and m.get("content") == message for t in turns for m in t["messages"])
    return tasks, said


def killed(env: dict[str, str], args: list[str], lines: list[str], after_s: float) -> str:
    """Start ``huddle ARGS`` with `lines` on its stdin, SIGKILL it after `after_s`; what it printed until then."""
    child = subprocess.Popen(
        [sys.executable, "-m", "huddle", *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    printed: list[str] = []
    reader = threading.Thread(target=lambda: printed.extend(iter(child.stdout.readline, "")) if child.stdout else None)
    reader.start()
    assert child.stdin is not None
    child.stdin.write("".join(f"{line}\n" for line in lines))
    child.stdin.close()
    time.sleep(after_s)
    child.send_signal(signal.SIGKILL)
    child.wait()
    reader.join()
    return "".join(printed)


def kills(tmp: Path, count: int) -> tuple[str, Tally, int, list[str]]:
    """Kill -9 ``huddle run --session`` and ``huddle chat --session`` (alternately) at a random moment, then resume
    (``run --resume``, or the chat reopened with no input); check the messages and the ledger.

    A chat gets four messages on piped stdin, so a kill lands before, during or between turns (model calls, tool
    calls, the save). A message is *acknowledged* when the session store recorded its turn (any status) before the
    resume, or when the killed process printed its answer. After the resume, each acknowledged message must appear
    exactly once among the session's saved turns (``huddle sessions show ID --json``: once as a turn's task, once as a
    user message in the turns' saved messages), with that turn ``done``; no message the process never acknowledged
    may appear twice. The session must open (resume and show without error), and the usage ledger must hold one row
    per request the model server received for that session.
    """
    rng = random.Random(9)
    mismatches: list[str] = []
    tally = Tally()
    with ScriptedServer(rules=slowed(server_rules(), 0.15)) as server:
        env = environment(tmp / "kills", server)
        start = len(server.chat_requests)
        for i in range(count):
            session, before = f"s{i}", len(server.chat_requests)
            # Decreasing task order: the scripted server answers a request for the first TASKS entry in its history.
            messages = [TASKS[(i + k) % len(TASKS)].text for k in range(4)][::-1]
            if i % 2 == 0:
                kind, messages = "run", messages[-1:]
                args, reopen = ["run", "--session", session, messages[0]], ["run", "--session", session, "--resume"]
            else:
                kind, args, reopen = "chat", ["chat", "--session", session], ["chat", "--session", session]
            quiet = ["--no-cache", "-q"]
            printed = killed(env, [args[0], *quiet, *args[1:]], messages if kind == "chat" else [], rng.uniform(1, 5))
            time.sleep(0.2)  # let the server finish answering the request the killed process left
            before_resume = turns_of(env, session)
            recorded = {t["task"] for t in before_resume}
            if not before_resume:
                tally.moments["before any turn was recorded"] += 1
            elif any(t["status"] == "running" for t in before_resume):
                tally.moments["mid-turn (a running turn redone)"] += 1
            else:
                tally.moments["between or after turns"] += 1
            answers = {t.text: t.answer for t in TASKS}
            acknowledged = [m for m in messages if m in recorded or answers[m] in printed]
            resumed = huddle(env, reopen[0], *quiet, *reopen[1:])
            if resumed.outcome == "error" and "nothing to run" in resumed.stderr:
                resumed = Proc(0, "(nothing to resume: the turn finished or never started)", "", resumed.seconds)
            if kind == "chat" and resumed.rc == 0 and not resumed.stdout.strip():
                resumed = Proc(0, "(nothing to redo)", resumed.stderr, resumed.seconds)
            label = f"kill #{i} ({kind} --session {session})"
            tally.add(label, resumed)
            turns = turns_of(env, session)
            if acknowledged and not turns:
                mismatches.append(f"{label}: the session does not open after the resume")
            for message in messages:
                tasks, said = saved_counts(turns, message)
                done = all(t["status"] == "done" for t in turns if t["task"] == message)
                if message in acknowledged and (tasks, said, done) != (1, 1, True):
                    mismatches.append(f"{label}: acknowledged {message!r}: {tasks} turns, {said} saved, done {done}")
                elif max(tasks, said) > 1:
                    mismatches.append(f"{label}: unacknowledged {message!r} saved twice ({tasks} turns, {said})")
            if (mismatch := ledger_mismatch(env, session, len(server.chat_requests) - before)) is not None:
                mismatches.append(f"{label}: {mismatch}")
        return "kill -9 + resume (run, chat)", tally, len(server.chat_requests) - start, mismatches


def pairs(tmp: Path, count: int) -> tuple[str, Tally, int, list[str]]:
    """Two processes on one session id at once (``run``+``run``, ``run``+``chat``), the second started 0.2-1.5 s after
    the first: each either answers or exits 1 with one ``error:`` line naming the busy session; the session then holds
    exactly the turns of the processes that answered, each once and ``done`` (none lost, none interleaved)."""
    rng = random.Random(12)
    mismatches: list[str] = []
    tally = Tally()
    with ScriptedServer(rules=slowed(server_rules(), 0.3)) as server:  # below timeout_s 0.5; turns overlap
        env = environment(tmp / "pairs", server)
        start = len(server.chat_requests)
        for i in range(count):
            session, before = f"p{i}", len(server.chat_requests)
            first, second = TASKS[(i + 1) % len(TASKS)].text, TASKS[i % len(TASKS)].text
            other = ["run", "--no-cache", "-q", "--session", session, second] if i % 2 == 0 else None
            with ThreadPoolExecutor(max_workers=2) as pool:
                one = pool.submit(huddle, env, "run", "--no-cache", "-q", "--session", session, first)
                time.sleep(rng.uniform(0.2, 1.5))
                two = pool.submit(chatted, env, session, second) if other is None else pool.submit(huddle, env, *other)
                procs = {first: one.result(), second: two.result()}
            label = f"pair #{i} (run+{'run' if other else 'chat'} --session {session})"
            answered = [message for message, proc in procs.items() if proc.outcome == "survived"]
            for message, proc in procs.items():
                tally.add(f"{label} {message!r}", proc)
                busy = [line for line in proc.stderr.splitlines() if line.strip()]
                if proc.outcome == "error" and not (len(busy) == 1 and f"session {session} is in use" in busy[0]):
                    mismatches.append(f"{label}: {proc.tail}")
            turns = turns_of(env, session)
            saved = [t["task"] for t in turns if t["status"] == "done"]
            if sorted(saved) != sorted(answered) or any(saved_counts(turns, m) != (1, 1) for m in answered):
                mismatches.append(
                    f"{label}: answered {answered}, saved turns {[(t['task'], t['status']) for t in turns]}"
                )
            if (mismatch := ledger_mismatch(env, session, len(server.chat_requests) - before)) is not None:
                mismatches.append(f"{label}: {mismatch}")
        return "two processes on one session", tally, len(server.chat_requests) - start, mismatches


def chatted(env: dict[str, str], session: str, message: str) -> Proc:
    """``huddle chat --session`` with one message on piped stdin."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "huddle", "chat", "--no-cache", "-q", "--session", session],
        env=env,
        input=f"{message}\n",
        capture_output=True,
        text=True,
        timeout=BOUND_S,
    )
    return Proc(done.returncode, done.stdout, done.stderr, time.perf_counter() - started)


def main(runs: int, garbage_count: int, kill_count: int, pair_count: int, only: set[str], log: Path | None) -> None:
    started = time.perf_counter()
    rows: list[tuple[str, Tally, int]] = []
    checks: list[tuple[str, int, list[str]]] = []  # (what, sessions checked, failed checks)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if "faults" in only:
            rows += fault_rates(tmp, runs)
        if "garbage" in only:
            rows.append(garbage_replies(tmp, garbage_count))
        if "concurrent" in only:
            rows.append(concurrent_runs(tmp))
        for part_name, measure, n in (("kills", kills, kill_count), ("pairs", pairs, pair_count)):
            if part_name in only:
                title, tally, requests, mismatches = measure(tmp, n)
                rows.append((title, tally, requests))
                checks.append((title, n, mismatches))
    header = ("attempts", "survived", "errors", "lost", "tracebacks", "hangs", "requests")
    print(f"{'':34} " + " ".join(f"{h:>10}" for h in header))
    for title, t, requests in rows:
        o = t.outcomes
        values = (t.attempts, o["survived"], o["error"], o["lost"], o["traceback"], o["hang"], requests)
        print(f"{title:34} " + " ".join(f"{v:>10}" for v in values))
    for _, t, _ in rows:
        if t.moments:
            print("kills landed: " + ", ".join(f"{n} {moment}" for moment, n in t.moments.most_common()))
    for title, n, mismatches in checks:
        failed = len({m.split(": ", 1)[0] for m in mismatches})
        print(f"{title}: {n - failed}/{n} sessions pass every check (messages exactly once, ledger = requests)")
    print(f"total {time.perf_counter() - started:.0f} s")
    print("\nclear errors (error: lines, digits as N):")
    for title, t, _ in rows:
        for line, count in t.errors.most_common():
            print(f"  {title}: {count}x {line}")
    if log is not None:
        log.write_text("\n".join(tb for _, t, _ in rows for tb in t.tracebacks))
    failures = [f for _, t, _ in rows for f in t.failures] + [m for _, _, ms in checks for m in ms]
    if failures:
        print(f"\n{len(failures)} failures:")
        for failure in failures:
            print(f"  {failure}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="runs per fault rate and team kind")
    parser.add_argument("--garbage", type=int, default=100, help="runs with garbage model replies")
    parser.add_argument("--kills", type=int, default=30, help="kill -9 moments")
    parser.add_argument("--pairs", type=int, default=6, help="pairs of processes on one session id")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts to run, of {','.join(PARTS)}")
    parser.add_argument("--log", type=Path, help="write every traceback in full to this file")
    options = parser.parse_args()
    main(options.runs, options.garbage, options.kills, options.pairs, set(options.only.split(",")), options.log)
