"""Faults in teams of every kind end with a clear outcome: one budget for a tree of nested teams, a member's failure of
any exception type recorded as a failure, a failed MCP start retried, custom agents closed, nothing left running
after a cancelled run, and no empty answer reported as a success."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core import CancellationToken

from huddle.config.settings import Settings, load_settings
from huddle.errors import HuddleError
from huddle.teams.base import RunResult, build_team
from huddle.teams.kinds import PatternSpec
from huddle.testing import Fault, Reply, Rule, ScriptedServer

CALL = (20, 80)  # the usage every scripted reply reports: 100 tokens, below the governor's estimate (its max_tokens)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(fallback=Reply(content="ok", usage=CALL)) as running:
        yield running


def configure(server: ScriptedServer, tmp_path: Path, extra: str = "") -> Settings:
    (tmp_path / "huddle.yaml").write_text(
        f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: 0, max_tokens: 100}}\n"
        f"{extra}"
    )
    return load_settings()


def spec(kind: str, agents: Sequence[dict[str, Any]], **team: Any) -> PatternSpec:
    return PatternSpec.model_validate({"team": {"name": f"{kind}-team", "kind": kind, **team}, "agents": list(agents)})


def model(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "instruction": f"You are {name}.", **fields}


async def run(settings: Settings, team_spec: PatternSpec, task: str = "go") -> RunResult:
    team = build_team(team_spec, settings)
    try:
        return await team.run(task)
    finally:
        await team.close()


# --- 1: one budget for a tree of teams ------------------------------------------------------------------------------


async def test_nested_teams_share_one_budget_and_the_parent_names_the_stop(
    server: ScriptedServer, tmp_path: Path
) -> None:
    """Four pipelines at once under a 600-token run limit: each pipeline's last member is its own team's final answer,
    which a governor of its own lets overshoot; one governor for the tree lets nothing past the limit but one call."""
    settings = configure(server, tmp_path, "budget: {run: {max_tokens: 600}}")
    pipeline = spec("sequential", [model("draft"), model("polish")])
    members = [{"name": f"p{i}", "team": pipeline.model_dump(exclude_defaults=True)} for i in range(4)]
    result = await run(settings, spec("parallel", members))

    assert result.usage.total_tokens <= 600 + sum(CALL)
    assert result.budget is not None and result.budget["stopped"] is not None
    assert result.stop_reason.startswith("budget")
    assert result.budget["stopped"] in result.stop_reason


async def test_nested_group_chats_share_the_budget_too(server: ScriptedServer, tmp_path: Path) -> None:
    """The issue's case: a parallel team of four chats, each with its own manager, planner and responder."""
    server.add_rule(Rule(agent="planner", reply=Reply(content='{"goal": "a", "steps": [], "done": true}', usage=CALL)))
    settings = configure(server, tmp_path, "budget: {run: {max_tokens: 600}}")
    chat = {"team": {"name": "desk", "plan": "always"}, "agents": [{"role": "planner"}, {"role": "responder"}]}
    result = await run(settings, spec("parallel", [{"name": f"c{i}", "team": chat} for i in range(4)]))

    assert result.usage.total_tokens <= 600 + sum(CALL)
    assert result.budget is not None and result.budget["stopped"] is not None
    assert result.stop_reason.startswith(("budget", "error: no answer (budget"))


# --- 3: a member's failure never escapes, whatever it raises ---------------------------------------------------------


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no message")


RAISED: dict[str, BaseException] = {
    "TimeoutError": TimeoutError("read timed out"),  # an HTTP read's, not the member's timeout (none is set)
    "asyncio.TimeoutError": asyncio.TimeoutError(),
    "KeyError": KeyError("k"),
    "Unprintable": Unprintable(),
}


class RaisingAgent(BaseChatAgent):
    """A custom member that raises `RAISED[error]` (``use: tests.test_team_faults:RaisingAgent``)."""

    def __init__(self, error: str) -> None:
        super().__init__("raising", "raises")
        self.error = error
        self.closed = False

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        raise RAISED[self.error]

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        """Stateless."""

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("error", list(RAISED))
async def test_a_member_failure_of_any_type_is_recorded_not_raised(
    error: str, server: ScriptedServer, tmp_path: Path
) -> None:
    member = {"name": "raising", "use": "tests.test_team_faults:RaisingAgent", "config": {"error": error}}
    result = await run(configure(server, tmp_path), spec("parallel", [member, model("steady")]))
    assert result.answer.startswith("## steady\nok")
    assert result.stop_reason.startswith("partial") and set(result.failures) == {"raising"}
    assert type(RAISED[error]).__name__ in result.failures["raising"]


async def test_a_group_chat_member_whose_error_cannot_be_printed_still_fails_as_a_message() -> None:
    from huddle.agents.guard import GuardedAgent
    from huddle.agents.state import RunState

    guarded = GuardedAgent(RaisingAgent("Unprintable"), RunState())
    response = await guarded.on_messages([TextMessage(content="hi", source="user")], CancellationToken())
    assert response.chat_message.to_text() == "raising failed: Unprintable (its message could not be read)"


# --- 8: nothing left open or running ---------------------------------------------------------------------------------


async def test_a_custom_agent_in_a_group_chat_is_closed_with_its_team(server: ScriptedServer, tmp_path: Path) -> None:
    from huddle.teams.group_chat import GroupChatTeam
    from huddle.teams.spec import TeamSpec

    custom = {"name": "helper", "use": "tests.test_team_faults:RaisingAgent", "config": {"error": "KeyError"}}
    team_spec = TeamSpec.model_validate({"team": {"name": "desk"}, "agents": [custom, {"role": "responder"}]})
    team = GroupChatTeam(team_spec, configure(server, tmp_path))
    agent = team._custom["helper"]
    await team.close()
    assert isinstance(agent, RaisingAgent) and agent.closed


async def test_a_cancelled_event_driven_run_leaves_no_handler_running(server: ScriptedServer, tmp_path: Path) -> None:
    """Closing the team mid-run (as Ctrl-C does) cancels the handlers still waiting on their model calls."""
    server.add_rule(Rule(reply=Reply(content="late", delay_s=5.0)))
    team_spec = spec("event_driven", [model("a", subscribe=["task"]), model("b", subscribe=["task"])])
    team = build_team(team_spec, configure(server, tmp_path))
    before = asyncio.all_tasks()
    running = asyncio.create_task(team.run("go"))
    while len(server.chat_requests) < 2:  # both handlers are waiting on their replies
        await asyncio.sleep(0.01)
    await team.close()
    await asyncio.sleep(0)  # let a task cancelled by the close finish
    left = {t for t in asyncio.all_tasks() - before if t is not running and not t.done()}
    assert not left, [t.get_coro() for t in left]
    running.cancel()


# --- 14: no answer is never a success --------------------------------------------------------------------------------

FAILING_TEAMS = {
    "sequential": spec("sequential", [model("a"), model("b")]),
    "parallel": spec("parallel", [model("a"), model("b")]),
    "hierarchical": PatternSpec.model_validate(
        {
            "team": {"name": "h", "kind": "hierarchical"},
            "agents": [model("a", description="does everything")],
            "manager": model("lead"),
        }
    ),
    "event_driven": spec("event_driven", [model("a", subscribe=["task"])]),
}


@pytest.mark.parametrize("kind", list(FAILING_TEAMS))
async def test_a_run_with_no_answer_stops_with_an_error_in_every_kind(
    kind: str, server: ScriptedServer, tmp_path: Path
) -> None:
    """Every model call fails (a manager that cannot delegate, in the hierarchical case): the empty answer's stop
    reason starts ``error:``, so no caller reads it as a success."""
    server.add_rule(Rule(fault=Fault(kind="server_error")))
    result = await run(configure(server, tmp_path), FAILING_TEAMS[kind])
    assert result.answer == ""
    assert result.stop_reason.startswith("error:") and result.failures


async def test_a_manager_that_answers_nothing_is_an_error(server: ScriptedServer, tmp_path: Path) -> None:
    """The manager delegates nothing and then writes an empty answer: an error, not ``finished``."""
    server.add_rule(Rule(agent="lead", reply=Reply(content='{"assignments": []}'), times=1))
    server.add_rule(Rule(agent="lead", reply=Reply(content="   ")))
    result = await run(configure(server, tmp_path), FAILING_TEAMS["hierarchical"])
    assert result.answer == "" and result.stop_reason.startswith("error: no answer (finished")


# --- 4: a failed MCP start is tried again ----------------------------------------------------------------------------

FLAKY_LAUNCHER = """
import os, runpy, sys
from pathlib import Path

if not Path("failed-once").exists():  # the first start fails, as a server whose port is taken would
    Path("failed-once").write_text("")
    sys.exit(1)
runpy.run_path("demo_server.py", run_name="__main__")
"""


async def test_a_failed_mcp_start_fails_its_run_and_is_retried_at_the_next(tmp_path: Path) -> None:
    from huddle.teams.group_chat import GroupChatTeam
    from huddle.teams.spec import TeamSpec
    from tests.test_mcp import SERVER

    (tmp_path / "demo_server.py").write_text(SERVER)
    (tmp_path / "launcher.py").write_text(FLAKY_LAUNCHER)
    mcp = [{"command": sys.executable, "args": ["launcher.py"], "env": {"PIDFILE": "server.pid"}, "tools": ["add"]}]
    team_spec = TeamSpec.model_validate(
        {
            "team": {"name": "mcp-desk", "mcp": mcp},
            "agents": [{"role": "planner"}, {"role": "tool_executor", "tools": []}, {"role": "responder"}],
        }
    )
    with ScriptedServer(fallback=Reply(content="ok")) as server:
        team = GroupChatTeam(team_spec, configure(server, tmp_path))
        try:
            with pytest.raises(HuddleError):
                await team.run("add forty and two")
            assert "add" not in team.toolsets["tool_executor"].names()
            result = await team.run("add forty and two")
        finally:
            await team.close()
    assert result.answer == "ok"
    assert "add" in team.toolsets["tool_executor"].names()  # the second run started the server and has its tool
