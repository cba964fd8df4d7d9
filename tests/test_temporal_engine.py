"""The Temporal engine on the real things: a Temporal dev server, `huddle worker` processes, a scripted model server
counting every request it gets, and the CLI.

These fail if a killed worker loses a turn or repeats a finished call, or if the shared ledger does not show what the
model server counted.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import importlib.util
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from huddle.agents.approval import ApprovalDecision
from huddle.config.settings import load_settings
from huddle.engines.temporal.sessions import TemporalSession
from huddle.storage.sessions import SessionStore
from huddle.teams.base import build_team
from huddle.teams.results import RunResult
from huddle.teams.spec import load_team
from huddle.testing import ScriptedServer
from huddle.testing.replies import Reply
from huddle.testing.rules import Rule
from huddle.testing.temporal import DevServer, Workers, dev_server, free_port
from huddle.usage.budget import Budget
from tests.commands import console_script
from tests.postgres import fresh_database, postgres_url
from tests.test_approvals import TOOLS, echo, plan, team_yaml
from tests.test_mcp_team import echo_findings, step, write_mcp_team

SLOW_S = 8.0
WORKER_START_S = 8.0  # a worker's start-up: imports, the team's warm-up build, its first poll
__all__ = ["postgres_url"]  # the fixture, imported for pytest


@pytest.fixture
def temporal(tmp_path: Path) -> Iterator[DevServer]:
    with dev_server(tmp_path) as server:
        yield server


def _config(folder: Path, model: ScriptedServer, temporal: DevServer, extra: str = "") -> Path:
    config = folder / "huddle.yaml"
    config.write_text(
        f"models:\n  default: {{model: scripted, base_url: '{model.base_url}', max_retries: 0}}\n"
        f"data_dir: {folder / 'data'}\ntemporal: {{address: '{temporal.address}', task_queue: q-{folder.name}}}\n"
        f"{extra}"
    )
    return config


def _huddle(
    config: Path, *args: str, timeout_s: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huddle", "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _agents(model: ScriptedServer) -> list[str]:
    return [request.agent for request in model.requests]


def _approval_project(folder: Path) -> tuple[Path, list[Rule]]:
    """The approvals tests' project (tests/test_approvals.py): a team whose tool call waits for a person, its
    tools module, and the scripted planner and responder."""
    (folder / "approval_tools.py").write_text(TOOLS)
    team = folder / "team.yaml"
    team.write_text(team_yaml())
    return team, [Rule(agent="planner", reply=Reply(content=plan())), Rule(agent="responder", reply=echo)]


def _wait_for(condition: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _through_a_takeover(
    model: ScriptedServer, config: Path, folder: Path, team: str, task: str, busy: str
) -> RunResult:
    """`task` as one turn of a new session on `team`: once `busy`'s model call is under way on the first worker, a
    second worker starts, polls, and the first is SIGKILLed mid-call; the turn's result, from the survivor."""
    settings = load_settings(config)
    workers = Workers(config, folder)
    first = workers.start(team)

    async def scenario() -> RunResult:
        session = await TemporalSession.open(settings, team)
        turn = asyncio.create_task(session.run(task))
        await asyncio.to_thread(_wait_for, lambda: busy in _agents(model))
        workers.start(team)  # the survivor, polling the same task queue
        await asyncio.sleep(3)  # until it polls
        workers.kill(first)  # mid-call: the request is still being answered
        result = await asyncio.wait_for(turn, 90)
        await session.close()
        return result

    try:
        return asyncio.run(scenario())
    finally:
        workers.close()


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_huddle_run_on_temporal_answers_and_the_shared_ledger_shows_the_servers_count(
    tmp_path: Path, temporal: DevServer, store: str, request: pytest.FixtureRequest
) -> None:
    shared = ""
    if store == "postgresql":  # the worker and the reader share the ledger through the server, not a file
        shared = f"database_url: '{fresh_database(request.getfixturevalue('postgres_url'))}'\n"
    with ScriptedServer(fallback=Reply(content="391", usage=(40, 3))) as model:
        config = _config(tmp_path, model, temporal, shared)
        workers = Workers(config, tmp_path)
        workers.start()
        try:
            ran = _huddle(config, "run", "--engine", "temporal", "What is 17*23?", "--json")
        finally:
            workers.close()
        assert ran.returncode == 0, ran.stderr
        result = json.loads(ran.stdout)
        assert result["answer"] == "391"
        reader = config
        if store == "postgresql":  # nothing on this host's disk: the rows can only have come through the server
            assert not (tmp_path / "data" / "usage.sqlite").exists()
            reader = tmp_path / "other-host" / "huddle.yaml"  # another host: its own data dir, the same database
            reader.parent.mkdir()
            reader.write_text(config.read_text().replace(str(tmp_path / "data"), str(reader.parent / "data")))
        usage = _huddle(reader, "usage", "--run", result["run_id"], "--json")  # another process, the worker's ledger
        total = json.loads(usage.stdout)["total"]
        assert total["calls"] == len(model.requests) == result["usage"]["calls"] == 2
        assert total["prompt_tokens"] == 80 and total["completion_tokens"] == 6
        runs = json.loads(_huddle(reader, "runs", "--json").stdout)  # and the worker's trace of the run
        assert [(r["run_id"], r["calls"]) for r in runs] == [(result["run_id"], 2)]
        trace = json.loads(_huddle(reader, "trace", result["run_id"], "--json").stdout)
        assert [s["kind"] for s in trace].count("model") == 2


def test_a_worker_killed_mid_call_loses_nothing_and_repeats_no_finished_call(
    tmp_path: Path, temporal: DevServer
) -> None:
    rules = [Rule(agent="responder", reply=[Reply(content="391", delay_s=SLOW_S), Reply(content="391")])]
    with ScriptedServer(rules, fallback=Reply(content="plan")) as model:
        config = _config(tmp_path, model, temporal)
        answer = _through_a_takeover(model, config, tmp_path, "assistant", "What is 17*23?", "responder").answer
    assert answer == "391"
    agents = _agents(model)
    assert agents.count("planner") == 1  # finished before the kill: not made again
    assert agents.count("responder") == 2  # the interrupted call, made again once on the survivor


def test_a_session_goes_on_after_the_temporal_server_restarts_on_its_db_file(
    tmp_path: Path, temporal: DevServer
) -> None:
    with ScriptedServer(fallback=Reply(content="noted")) as model:
        config = _config(tmp_path, model, temporal)
        settings = load_settings(config)
        workers = Workers(config, tmp_path)
        workers.start()
        try:

            async def scenario() -> tuple[str, str]:
                session = await TemporalSession.open(settings, "assistant")
                first = await session.run("My order number is 1042.")
                temporal.kill()
                temporal.start()  # same port, same db file
                again = await TemporalSession.open(settings, "assistant", session.session_id)
                second = await asyncio.wait_for(again.run("What is my order number?"), 90)
                await again.close()
                return first.answer, second.answer

            first, second = asyncio.run(scenario())
        finally:
            workers.close()
    assert first == second == "noted"
    last = model.requests[-1]
    assert "1042" in json.dumps(last.messages)  # the conversation survived: the earlier turn is in the prompt


def test_a_session_waiting_on_an_approval_with_no_worker_resumes_when_one_starts(
    tmp_path: Path, temporal: DevServer
) -> None:
    team, rules = _approval_project(tmp_path)
    counter = tmp_path / "count.txt"
    with ScriptedServer(rules) as model:
        config = _config(tmp_path, model, temporal)
        settings = load_settings(config)
        workers = Workers(config, tmp_path)
        first = workers.start(str(team))
        try:

            async def scenario() -> str:
                session = await TemporalSession.open(settings, str(team))
                paused = await session.run("bump the counter")
                assert paused.stop_reason == "awaiting_approval" and not counter.exists()
                workers.kill(first)  # nobody is running when the person decides
                [call] = paused.pending
                decided = asyncio.create_task(session.resume({call.id: ApprovalDecision.approve()}))
                await asyncio.sleep(3)
                assert not decided.done() and not counter.exists()  # kept by Temporal, not lost, not run
                workers.start(str(team))
                result = await asyncio.wait_for(decided, 90)
                await session.close()
                return result.answer

            answer = asyncio.run(scenario())
        finally:
            workers.close()
    assert "counter is 1 (hello)" in answer
    assert counter.read_text() == "1"  # the approved call ran once
    sessions = _huddle(config, "sessions", "list")  # the shared session store, from another process
    assert sessions.returncode == 0 and "gate" in sessions.stdout, sessions.stdout + sessions.stderr


def test_the_model_activity_writes_one_ledger_row_per_attempt_even_when_an_attempt_is_delivered_twice(
    tmp_path: Path,
) -> None:
    from temporalio.testing import ActivityEnvironment

    from huddle.engines.temporal.activities import ModelActivities
    from huddle.engines.temporal.calls import ModelCall
    from huddle.usage import UsageLedger
    from tests.serving import scripted_settings

    with ScriptedServer(fallback=Reply(content="391", usage=(10, 2))) as model:
        settings = scripted_settings(tmp_path, model)
        ledger = UsageLedger(settings.ledger_location)
        models = ModelActivities(ledger)
        call = ModelCall(
            profile=settings.profile().model_dump(mode="json"),
            agent="responder",
            messages=[{"type": "UserMessage", "content": "What is 17*23?", "source": "user"}],
            run_id="r1",
        )

        async def attempts() -> None:
            environment = ActivityEnvironment()
            for _ in range(2):  # the same attempt twice (a redelivery): the server is called, the ledger written once
                reply = await environment.run(models.model_call, call)
                assert reply.result["content"] == "391"
            environment.info = dataclasses.replace(environment.info, attempt=2)
            await environment.run(models.model_call, call)  # a new attempt: a row of its own
            await models.close()

        asyncio.run(attempts())
        assert len(model.requests) == 3
        assert ledger.totals(run_id="r1").calls == 2


def test_a_run_budget_holds_across_a_worker_takeover(tmp_path: Path, temporal: DevServer) -> None:
    members = "".join(f"  - {{name: {name}, instruction: Add a line.}}\n" for name in "abcdef")
    team = tmp_path / "chain.yaml"
    team.write_text(f"team: {{name: chain, kind: sequential}}\nagents:\n{members}")
    call = Reply(content="a line", usage=(100, 10))
    slow = [Reply(content="a line", usage=(100, 10), delay_s=SLOW_S), call]
    with ScriptedServer([Rule(agent="b", reply=slow)], fallback=call) as model:
        config = _config(
            tmp_path, model, temporal, "budget: {run: {max_tokens: 400}, expected_completion_tokens: 10}\n"
        )
        # a's call is spent on the dead worker; the survivor must count it
        spent = _through_a_takeover(model, config, tmp_path, str(team), "write", "b").usage.total_tokens
    answered = len(model.requests) - 1  # the call cut by the kill was never answered, so never billed
    assert answered * 110 <= 400 + 110  # at most one call past the limit, by the model server's count
    assert spent == answered * 110  # and the run's own meter agrees with the server
    assert "f" not in _agents(model)  # the chain was stopped, not run to its end


def test_huddle_approve_decides_a_temporal_sessions_pending_call_from_another_process(
    tmp_path: Path, temporal: DevServer
) -> None:
    team, rules = _approval_project(tmp_path)
    with ScriptedServer(rules) as model:
        config = _config(tmp_path, model, temporal)
        workers = Workers(config, tmp_path)
        workers.start(str(team))
        try:
            paused = _huddle(config, "run", "--engine", "temporal", "--team", str(team), "bump the counter", "--json")
            assert paused.returncode == 3, paused.stderr  # waiting for approval
            session = json.loads(paused.stdout)["session_id"]
            denied = _huddle(config, "approve", session, "--deny", "not today", "--engine", "temporal")
            nothing = _huddle(config, "approve", "no-such-session", "--engine", "temporal")
        finally:
            workers.close()
    assert denied.returncode == 0, denied.stderr
    assert "not today" in denied.stdout and not (tmp_path / "count.txt").exists()
    assert nothing.returncode != 0 and "no session 'no-such-session'" in nothing.stderr
    assert "Traceback" not in nothing.stderr


def test_huddle_chat_on_temporal_keeps_the_conversation_across_processes(tmp_path: Path, temporal: DevServer) -> None:
    with ScriptedServer(fallback=Reply(content="noted")) as model:
        config = _config(tmp_path, model, temporal)
        workers = Workers(config, tmp_path)
        workers.start()
        try:
            chat = ("chat", "--engine", "temporal", "--session", "s1")
            first = _huddle(config, *chat, stdin="My order number is 1042.\n/exit\n")
            again = _huddle(config, *chat, stdin="What is my order number?\n")
        finally:
            workers.close()
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert first.stdout.strip() == again.stdout.strip() == "noted"
    assert "session s1 on Temporal" in again.stderr
    assert "1042" in json.dumps(model.requests[-1].messages)  # the second process's turn saw the first's


def test_no_temporal_service_is_one_error_line_naming_the_address(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = tmp_path / "huddle.yaml"
    config.write_text(f"temporal: {{address: '127.0.0.1:{port}'}}\ndata_dir: {tmp_path / 'data'}\n")
    ran = _huddle(config, "run", "--engine", "temporal", "What is 17*23?")
    assert ran.returncode not in (0, 3)
    assert f"no Temporal service at temporal.address '127.0.0.1:{port}'" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_the_support_suite_passes_on_temporal_each_trial_a_session_workflow(
    tmp_path: Path, temporal: DevServer
) -> None:
    config = tmp_path / "huddle.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\ntemporal: {{address: '{temporal.address}'}}\n")
    scenarios = sorted(str(p) for p in (Path(__file__).resolve().parent.parent / "examples" / "support").glob("*.yaml"))
    run = _huddle(config, "scenario", "run", *scenarios, "--engine", "temporal", "--json", "-j", "3", timeout_s=600)
    suite = json.loads(run.stdout or "{}")
    assert run.returncode == 0 and suite["passed"], run.stderr[-2000:] + run.stdout[-2000:]
    trials = {s["name"]: s["trials"][0] for s in suite["scenarios"]}
    refund = trials["refund-damaged-item"]
    assert [(c["tool"], c["ok"]) for c in refund["tool_calls"]] == [("lookup_order", True), ("issue_refund", True)]
    assert [(a["tool"], a["decision"]) for a in refund["approvals"]] == [("issue_refund", "approve")]

    async def workflows() -> list[str]:
        from temporalio.client import Client

        client = await Client.connect(temporal.address)
        return [w.id async for w in client.list_workflows("WorkflowType = 'huddle.session'")]

    ran = asyncio.run(workflows())
    assert sorted(ran) == sorted(f"huddle-session-{t['session_id']}" for t in trials.values())


def test_a_team_the_workers_cannot_build_fails_the_session_with_one_error_line(
    tmp_path: Path, temporal: DevServer
) -> None:
    """It failed the workflow task instead, which Temporal retries for ever, and the caller heard only "Workflow Task
    in failed state" (with no word of which team, or why)."""
    with ScriptedServer(fallback=Reply(content="noted")) as model:
        config = _config(tmp_path, model, temporal)
        workers = Workers(config, tmp_path)
        workers.start()
        try:
            ran = _huddle(config, "run", "--engine", "temporal", "--team", "asistant", "hello", timeout_s=60)
        finally:
            workers.close()
    assert ran.returncode not in (0, 3) and "Traceback" not in ran.stderr
    assert "team 'asistant': no such preset" in ran.stderr and model.requests == []


def test_an_mcp_server_from_the_package_index_serves_a_team_on_temporal(tmp_path: Path, temporal: DevServer) -> None:
    """The worker holds the team's MCP servers (the workflow's own event loop can start no process and open no
    socket), and each tool call is a recorded step: its result is in the session's history, not called again."""
    time_server = console_script("mcp-server-time", "the dev extra: pip install -e '.[dev,mcp]'")
    servers = f'[{{command: "{time_server}", args: [--local-timezone, UTC], name: time, tools: [convert_time]}}]'
    team = write_mcp_team(tmp_path / "teams", servers)
    outer = tmp_path / "outer.yaml"  # the same team nested in a sequential one: its servers are held too
    outer.write_text(f"team: {{name: outer, kind: sequential}}\nagents:\n  - {{name: desk, team: '{team}'}}\n")
    args = {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
    plan = {"goal": "convert", "done": False, "steps": [step(1, "time__convert_time", args)]}
    rules = [Rule(agent="planner", reply=Reply(content=json.dumps(plan))), Rule(reply=echo_findings)]
    with ScriptedServer(rules) as model:
        config = _config(tmp_path, model, temporal)
        workers = Workers(config, tmp_path)
        workers.start(str(team), str(outer))
        try:
            ran = [
                _huddle(config, "run", "--engine", "temporal", "--team", str(name), "--json", "noon UTC in Tokyo?")
                for name in (team, outer)
            ]
        finally:
            workers.close()
    for one in ran:
        assert one.returncode == 0, one.stderr[-3000:]
        assert json.loads(one.stdout)["answer"].startswith("Tokyo: 21:00"), one.stdout


def _tool_team(folder: Path, module: str, source: str, tool: str) -> Path:
    """A planner / tool executor / responder team file whose executor runs `module`'s `tool` (its `source` written
    beside it) without asking."""
    (folder / f"{module}.py").write_text(source)
    team = folder / f"{module}.yaml"
    executor = f"{{role: tool_executor, tools: ['{module}:{tool}'], approval: never}}"
    team.write_text(
        f"team: {{name: {tool}-desk, plan: always}}\nagents:\n  - {{role: planner}}\n  - {executor}\n"
        "  - {role: responder}\n"
    )
    return team


ASYNC_TOOLS = '''
from pathlib import Path

from huddle.tools import tool


@tool(side_effects="write")
async def note(text: str) -> str:
    """Append a line to notes.log (a side effect the test counts)."""
    with Path("notes.log").open("a") as log:
        log.write(text + "\\n")
    return f"noted {text}"
'''


def test_an_async_tool_call_finished_before_a_worker_dies_is_not_made_again(
    tmp_path: Path, temporal: DevServer
) -> None:
    """An async tool ran in the workflow itself, so the survivor's replay of the session ran it a second time."""
    team = _tool_team(tmp_path, "async_tools", ASYNC_TOOLS, "note")
    rules = [
        Rule(agent="planner", reply=Reply(content=plan("note", {"text": "hello"}))),
        Rule(agent="responder", reply=[Reply(content="done", delay_s=SLOW_S), Reply(content="done")]),
    ]
    with ScriptedServer(rules) as model:
        config = _config(tmp_path, model, temporal)
        # the worker dies after the tool call, during the responder's
        answer = _through_a_takeover(model, config, tmp_path, str(team), "note hello", "responder").answer
    assert answer == "done" and _agents(model).count("responder") == 2
    assert (tmp_path / "notes.log").read_text().splitlines() == ["hello"]


def test_the_callers_budget_holds_the_run_over_the_workers_own(tmp_path: Path, temporal: DevServer) -> None:
    """What a served key's limits need: the workers' settings have no budget; the Update's does."""
    members = "".join(f"  - {{name: {name}, instruction: Add a line.}}\n" for name in "abcdef")
    team = tmp_path / "chain.yaml"
    team.write_text(f"team: {{name: chain, kind: sequential}}\nagents:\n{members}")
    with ScriptedServer(fallback=Reply(content="a line", usage=(100, 10))) as model:
        config = _config(tmp_path, model, temporal, "budget: {expected_completion_tokens: 10}\n")
        settings = load_settings(config)
        workers = Workers(config, tmp_path)
        workers.start(str(team))
        held = Budget.model_validate({"run": {"max_tokens": 250}, "expected_completion_tokens": 10})
        try:

            async def scenario() -> tuple[int, int]:
                session = await TemporalSession.open(settings, str(team))
                limited = await session.run("write", budget=held)
                unlimited = await session.run("write again")
                await session.close()
                return limited.usage.total_tokens, unlimited.usage.total_tokens

            limited, unlimited = asyncio.run(scenario())
        finally:
            workers.close()
    assert limited <= 250 + 110 and unlimited == 6 * 110


def test_a_customers_yes_approves_the_waiting_refund_on_temporal(tmp_path: Path, temporal: DevServer) -> None:
    """The support router answers for the customer on the engine too: "yes" took the paused refund up locally, but
    on Temporal it started a new run and the refund never ran."""
    database = tmp_path / "orders.sqlite"
    shop = Path(__file__).resolve().parent.parent / "examples" / "support"
    with sqlite3.connect(database) as connection:
        connection.executescript((shop / "fixtures" / "orders.sql").read_text())
    spec = load_team("support")
    spec.agents[2].config = {"database": str(database)}  # the orders agent
    team = tmp_path / "support.yaml"
    team.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True)))
    with ScriptedServer([Rule(agent="responder", reply=Reply(content="Done."))]) as model:
        config = _config(tmp_path, model, temporal)
        settings = load_settings(config)
        workers = Workers(config, tmp_path)
        workers.start(str(team))
        try:

            async def scenario() -> tuple[list[str], RunResult]:
                session = await TemporalSession.open(settings, str(team), "s1")
                paused = await session.run("Hi, order 1042 arrived broken. I want my money back.")
                answered = await session.run("Yes, please refund it.")
                await session.close()
                return [p.tool for p in paused.pending], answered

            asked, answered = asyncio.run(scenario())
        finally:
            workers.close()
    assert asked == ["issue_refund"] and answered.answer == "Done." and answered.pending == []
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT status FROM orders WHERE id = '1042'").fetchone()[0] == "refunded"
    with SessionStore(settings.sessions_location) as store:
        assert [t.status for t in store.turns("s1")] == ["done"]


def _pattern_examples() -> Any:
    """examples/patterns/run_offline.py, for its scripted model (an echo; a hierarchical manager delegates)."""
    path = Path(__file__).resolve().parent.parent / "examples" / "patterns" / "run_offline.py"
    loaded = importlib.util.spec_from_file_location("run_offline", path)
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


def test_every_team_kind_answers_on_temporal_as_it_does_in_process(tmp_path: Path, temporal: DevServer) -> None:
    """Sequential, parallel, hierarchical, event-driven and a composite with nested teams: the same answer, the same
    speakers and the same number of model calls from a session workflow as from the team built here."""
    examples = _pattern_examples()
    teams = [str(examples.HERE / f"{kind}.yaml") for kind in KINDS]
    with ScriptedServer([Rule(reply=examples.scripted_model)]) as model:
        config = _config(tmp_path, model, temporal)
        settings = load_settings(config)
        workers = Workers(config, tmp_path)
        workers.start(*teams)

        async def both(team: str) -> tuple[RunResult, RunResult]:
            local = build_team(team, settings)
            try:
                here = await local.run(examples.TASK)
            finally:
                await local.close()
            session = await TemporalSession.open(settings, team)
            there = await session.run(examples.TASK)
            await session.close()
            return here, there

        try:
            results = {Path(team).stem: asyncio.run(both(team)) for team in teams}
        finally:
            workers.close()
    for kind, (here, there) in results.items():
        # An idle event-driven run answers with the last output, whichever of its concurrent handlers ends last.
        answers = {m.content for m in here.messages if m.source == "notifier"} if kind == "event_driven" else set()
        assert there.answer in {here.answer, *answers} and there.stop_reason == here.stop_reason, kind
        assert sorted(m.source for m in there.messages) == sorted(m.source for m in here.messages), kind  # in any order
        assert there.usage.calls == here.usage.calls > 0, kind


KINDS = ("sequential", "parallel", "hierarchical", "event_driven", "composite")


def test_a_long_session_continues_as_new_with_its_conversation_and_its_spending(
    tmp_path: Path, temporal: DevServer
) -> None:
    """Two turns a workflow run: five turns are three runs, and the team's state and the session's budget go along."""
    with ScriptedServer(fallback=Reply(content="noted", usage=(100, 10))) as model:
        budget = "budget: {session: {max_tokens: 450}, expected_completion_tokens: 10}\n"
        config = _config(tmp_path, model, temporal, budget)
        config.write_text(config.read_text().replace("task_queue:", "turns_per_run: 2, task_queue:"))
        settings = load_settings(config)
        workers = Workers(config, tmp_path)
        workers.start()
        try:

            async def scenario() -> tuple[list[RunResult], list[str]]:
                session = await TemporalSession.open(settings, "assistant", "long")
                results = [await session.run(text) for text in ("My order number is 1042.", "b", "c", "d", "e")]
                await session.close()
                await session.handle.result()  # ended
                query = "WorkflowId = 'huddle-session-long'"
                for _ in range(50):  # the visibility store lags a moment behind
                    runs = sorted([w.status.name async for w in session.client.list_workflows(query)])
                    if "COMPLETED" in runs:
                        break
                    await asyncio.sleep(0.2)
                return results, runs

            results, runs = asyncio.run(scenario())
        finally:
            workers.close()
    assert runs == ["COMPLETED", "CONTINUED_AS_NEW", "CONTINUED_AS_NEW"]
    assert [r.answer for r in results] == ["noted"] * 5
    assert "1042" in json.dumps(model.requests[3].messages)  # the fourth turn, in the second run, saw the first
    # The session's 450 tokens, counted over the runs: past 70% before the fourth turn (330), spent before the fifth.
    assert [(r.budget or {}).get("level") for r in results[3:]] == ["soft", "hard"]


@pytest.mark.parametrize(("args", "code"), [(["--version"], 0), (["run", "--no-such-flag"], 2)])
def test_a_process_that_loaded_the_temporal_sdk_exits_with_its_code_and_its_exit_handlers(
    args: list[str], code: int
) -> None:
    """Such a process skips the interpreter's teardown (the SDK's threads can abort it, temporalio/sdk-python#300);
    what the teardown would have done still happens: the exit handlers run (the last trace batch), the code stays."""
    script = (
        "import atexit, sys; import temporalio.bridge.client; atexit.register(print, 'handlers ran'); "
        f"sys.argv = ['huddle', *{args!r}]; from huddle.__main__ import main; main()"
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert ran.returncode == code and ran.stdout.rstrip().endswith("handlers ran"), ran


def test_two_workers_on_one_task_queue_both_serve_sessions(tmp_path: Path, temporal: DevServer) -> None:
    """Twelve sessions at once: each workflow task names the worker that ran it, and both workers ran some."""
    with ScriptedServer(fallback=Reply(content="noted", delay_s=0.2)) as model:
        config = _config(tmp_path, model, temporal)
        settings = load_settings(config)
        workers = Workers(config, tmp_path)
        pids = {workers.start().pid, workers.start().pid}
        time.sleep(WORKER_START_S)  # both polling

        async def scenario() -> tuple[list[str], set[str]]:
            sessions = [await TemporalSession.open(settings, "assistant") for _ in range(12)]
            results = await asyncio.gather(*(s.run(f"question {i}") for i, s in enumerate(sessions)))
            ran_by = set()
            for session in sessions:
                await session.close()
                async for event in session.handle.fetch_history_events():
                    if event.HasField("workflow_task_completed_event_attributes"):
                        ran_by.add(event.workflow_task_completed_event_attributes.identity)
            return [r.answer for r in results], ran_by

        try:
            answers, ran_by = asyncio.run(scenario())
        finally:
            workers.close()
    assert answers == ["noted"] * 12
    assert {int(identity.split("@")[0]) for identity in ran_by} == pids  # the SDK's identity: pid@host


LEAKY_TOOLS = '''
from huddle.tools import tool


@tool
def fetch(what: str) -> str:
    """Fetch something (it comes back with a key in it)."""
    return f"{what}: found, and the key is sk-proj-abcdefghijklmnopqrstuvwxyz123456"
'''


def _history_bytes(history_json: str) -> list[bytes]:
    """The history as JSON, and every payload in it decoded (payloads are base64 in the JSON, a recorded step's
    outcome base64 again inside its payload): where a secret could hide."""
    found = [history_json.encode()]

    def walk(value: Any) -> None:
        if isinstance(value, dict | list):
            for item in value.values() if isinstance(value, dict) else value:
                walk(item)
        elif isinstance(value, str) and len(value) >= 8:
            try:
                decoded = base64.b64decode(value, validate=True)
            except ValueError:
                return
            found.append(decoded)
            try:
                walk(json.loads(decoded))
            except ValueError:
                return

    walk(json.loads(history_json))
    return found


def test_no_key_reaches_the_sessions_history(tmp_path: Path, temporal: DevServer) -> None:
    """Temporal keeps every Update's input and every recorded step's outcome: the user's message and the tool's
    result went into it as they were."""
    team = _tool_team(tmp_path, "leaky_tools", LEAKY_TOOLS, "fetch")
    rules = [
        Rule(agent="planner", reply=Reply(content=plan("fetch", {"what": "the order"}))),
        Rule(agent="responder", reply=echo),
    ]
    with ScriptedServer(rules) as model:
        config = _config(tmp_path, model, temporal)
        settings = load_settings(config)
        workers = Workers(config, tmp_path)
        workers.start(str(team))
        try:

            async def scenario() -> tuple[RunResult, str]:
                session = await TemporalSession.open(settings, str(team))
                result = await session.run("fetch the order; my key is sk-proj-ZYXWVUTSRQPONMLKJIHGFEDCBA654321")
                await session.close()
                return result, (await session.handle.fetch_history()).to_json()

            result, history = asyncio.run(scenario())
        finally:
            workers.close()
    blobs = _history_bytes(history)
    assert any(b"the order: found" in blob for blob in blobs)  # the tool's result is in there, decoded
    for secret in (b"abcdefghijklmnopqrstuvwxyz123456", b"ZYXWVUTSRQPONMLKJIHGFEDCBA654321"):
        assert not any(secret in blob for blob in blobs)
    assert "***" in result.answer  # the responder saw the masked result
