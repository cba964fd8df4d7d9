"""The public API (`import huddle`) and the `Team` base every kind shares, over real HTTP to the scripted server.

What a user of the library would notice: `import huddle` is cheap and names everything; a stream abandoned with
``break`` leaves nothing behind (later calls are not billed to it, no context error, its trace is closed, the team
takes the next task); two tasks at once on one team get a clear error instead of each other's answers; ``async with``
stops what is still running; ``huddle.run`` answers from a script with no event loop; ``huddle schema`` validates the
shipped team files.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from autogen_core.models import UserMessage

import huddle
from huddle.config.settings import Settings, load_settings
from huddle.models.factory import build_client
from huddle.testing import RecordedRequest, Reply, Rule, ScriptedServer
from huddle.tracing import spans
from huddle.usage import current_scope

PLAN = json.dumps({"goal": "answer", "steps": [], "done": True})
ROOT = Path(__file__).resolve().parent.parent


def echo_task(request: RecordedRequest) -> Reply:
    """The responder's reply names the task it was given, so a test can tell whose answer it is."""
    user = [str(m.get("content")) for m in request.messages if m.get("role") == "user"]
    return Reply(content=f"answer to: {user[-1].strip().splitlines()[-1]}")  # the task is the last line


@pytest.fixture
def server() -> Any:
    with ScriptedServer() as running:
        running.add_rule(Rule(agent="responder", reply=echo_task))
        yield running


@pytest.fixture
def settings(server: ScriptedServer, tmp_path: Path) -> Settings:
    (tmp_path / "huddle.yaml").write_text(
        f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: 0}}\n"
    )
    return load_settings()


def desk(settings: Settings) -> huddle.Team:
    """A group chat declared in Python, as short as its YAML."""
    agents = [huddle.planner(), huddle.tool_executor(tools=["calculator"]), huddle.responder()]
    return huddle.Team.chat("desk", agents, settings, plan="always")


def test_import_is_cheap_and_names_the_public_api() -> None:
    code = (
        "import sys, huddle; assert 'autogen_core' not in sys.modules, 'import huddle pulled in autogen'; "
        "print(huddle.Team, huddle.run, huddle.tool, huddle.Budget)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "huddle.teams.base.Team" in done.stdout and "huddle.usage.budget.Budget" in done.stdout
    assert set(huddle.__all__) == set(huddle._EXPORTS)
    for name in huddle.__all__:
        assert getattr(huddle, name) is not None
    with pytest.raises(AttributeError):
        _ = huddle.GroupChatTeam  # private: lives in huddle.teams.group_chat


async def test_a_stream_abandoned_with_break_leaves_nothing_behind(server: ScriptedServer, settings: Settings) -> None:
    server.add_rule(Rule(agent="planner", times=1, reply=Reply(content=PLAN, delay_s=0.5)))  # still thinking
    server.add_rule(Rule(agent="planner", reply=Reply(content=PLAN)))
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: loop_errors.append(context))
    team = desk(settings)

    async for _ in team.run_stream("first task", run_id="abandoned"):
        break
    gc.collect()
    assert current_scope().run_id is None and spans._run_id.get() is None  # nothing of the run in the caller's context

    outside = build_client(settings.profile(), team.ledger, agent="outside")
    await outside.create([UserMessage(content="hello", source="user")])
    await outside.close()
    (record,) = team.ledger.records(agent="outside")
    assert record.run_id is None  # not billed to the abandoned run

    result = await team.run("second task")  # the team is free again: the abandoned run was stopped
    assert result.answer == "answer to: second task"
    await team.close()

    trace = [json.loads(line) for line in (settings.runs_dir / "abandoned.jsonl").read_text().splitlines()]
    root = next(span for span in trace if span["kind"] == "run")  # written when the run's trace was left
    assert root["status"] != "ok" and "Cancelled" in (root["error"] or "")
    assert "outside" not in team.ledger.by("agent", run_id="abandoned")
    for _ in range(3):
        await asyncio.sleep(0)  # let any finaliser of the abandoned stream run
    assert loop_errors == []


async def test_a_second_task_on_a_busy_team_is_refused(server: ScriptedServer, settings: Settings) -> None:
    server.add_rule(Rule(agent="planner", reply=Reply(content=PLAN, delay_s=0.2)))
    async with desk(settings) as team:
        first, second = await asyncio.gather(team.run("task A"), team.run("task B"), return_exceptions=True)
        assert isinstance(first, huddle.RunResult) and first.answer == "answer to: task A"
        assert isinstance(second, huddle.TeamBusyError) and isinstance(second, huddle.HuddleError)
        assert "already running a task" in str(second)
        after = await team.run("task C")
        assert after.answer == "answer to: task C"
        assert [d.speaker for d in after.decisions] == ["planner", "responder"]  # its own decisions only


async def test_async_with_stops_a_run_still_in_progress(server: ScriptedServer, settings: Settings) -> None:
    server.add_rule(Rule(agent="planner", reply=Reply(content=PLAN, delay_s=5)))
    async with desk(settings) as team:
        running = asyncio.create_task(team.run("slow task", run_id="slow"))
        await asyncio.sleep(0.3)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 1)
    trace = (settings.runs_dir / "slow.jsonl").read_text()
    assert '"kind": "run"' in trace  # the run span was written: its trace is closed


def test_huddle_run_answers_from_a_plain_script(server: ScriptedServer, settings: Settings) -> None:
    server.add_rule(Rule(agent="planner", reply=Reply(content=PLAN)))
    result = huddle.run("assistant", "What is the capital of France?")
    assert isinstance(result, huddle.RunResult)
    assert result.answer == "answer to: What is the capital of France?"
    assert result.kind == "group_chat" and result.failures == {}


async def test_team_load_builds_every_kind_with_one_result_type(server: ScriptedServer, settings: Settings) -> None:
    server.add_rule(Rule(agent="writer", reply=Reply(content="a draft")))
    spec = {"team": {"name": "pipe", "kind": "sequential"}, "agents": [{"name": "writer", "instruction": "Write."}]}
    path = Path("pipe.yaml")
    path.write_text(yaml.safe_dump(spec))
    async with huddle.Team.load(path, settings) as team:
        result = await team.run("write")
    assert isinstance(result, huddle.RunResult) and result.kind == "sequential" and result.answer == "a draft"
    assert [(d.speaker, d.policy) for d in result.decisions] == [("writer", "sequence")]
    assert huddle.TeamSpec.from_file(ROOT / "teams" / "presets" / "assistant.yaml").team.name == "assistant"


def test_huddle_schema_validates_the_shipped_team_files(tmp_path: Path) -> None:
    out = tmp_path / "team.schema.json"
    done = subprocess.run(["huddle", "schema", "-o", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    schema = json.loads(out.read_text())
    files = [*(ROOT / "teams" / "presets").glob("*.yaml"), *(ROOT / "examples" / "patterns").glob("*.yaml")]
    assert files
    for file in files:
        jsonschema.validate(yaml.safe_load(file.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"team": {"name": "x", "kind": "sequential"}, "agents": [{"nme": "typo"}]}, schema)
