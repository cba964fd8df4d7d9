"""The hub every endpoint of ``huddle serve`` runs turns through: sessions are freed however a turn ends, and the
plan and meter it reports are the ones the run is at."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from huddle.errors import ConfigError
from huddle.serve.events import TeamEvent
from huddle.serve.hub import Hub, SessionBusy
from huddle.testing import Reply, Rule, ScriptedServer
from tests.plans import calculator_plan
from tests.serving import scripted_settings

TEAM = """
team: {name: calc, plan: always}
agents:
  - {role: planner}
  - {role: tool_executor, tools: [calculator]}
  - {role: responder}
"""


@pytest.fixture
def server() -> ScriptedServer:
    rules = [
        Rule(agent="planner", reply=Reply(content=calculator_plan())),
        Rule(agent="responder", reply=Reply(content="17*23 is 391.")),
    ]
    with ScriptedServer(rules=rules) as running:
        yield running  # type: ignore[misc]


@pytest.fixture
def hub(tmp_path: Path, server: ScriptedServer) -> Hub:
    (tmp_path / "calc.yaml").write_text(TEAM)
    settings = scripted_settings(tmp_path, server, "budget:\n  run: {max_usd: 0.5}\n")
    return Hub(settings, [tmp_path / "calc.yaml"])


async def events_of(hub: Hub, session_id: str | None = None) -> list[TeamEvent]:
    turn = await hub.turn("calc", "What is 17*23?", session_id=session_id)
    return [event async for event in turn.events]


async def test_a_turn_never_read_frees_its_session_when_closed_or_dropped(hub: Hub) -> None:
    turn = await hub.turn("calc", "What is 17*23?", session_id="s1")
    with pytest.raises(SessionBusy):
        await hub.turn("calc", "again", session_id="s1")
    await turn.events.aclose()  # the client went away before the first event
    assert hub.busy == 0
    dropped = await hub.turn("calc", "What is 17*23?", session_id="s1")
    del dropped
    gc.collect()
    assert hub.busy == 0
    assert (await events_of(hub, "s1"))[-1].text == "17*23 is 391."


async def test_the_plan_reported_last_has_every_step_done_and_the_meter_its_budget(hub: Hub) -> None:
    events = await events_of(hub)
    plans = [event.data["steps"] for event in events if "steps" in event.data]
    assert [step["status"] for step in plans[0]] == ["pending", "pending"]
    assert [(step["assignee"], step["status"]) for step in plans[-1]] == [
        ("tool_executor", "done"),
        ("responder", "done"),
    ]
    meters = [event.data for event in events if event.kind == "usage"]
    calls = [meter["calls"] for meter in meters]
    assert calls == sorted(calls) and calls[-1] == 2  # the planner's call, then the responder's
    assert {meter["max_usd"] for meter in meters} == {0.5}


def test_two_served_teams_with_one_name_are_refused(tmp_path: Path, server: ScriptedServer) -> None:
    (tmp_path / "calc.yaml").write_text(TEAM)
    (tmp_path / "other.yaml").write_text(TEAM)
    with pytest.raises(ConfigError, match="another served team is already named 'calc'"):
        Hub(scripted_settings(tmp_path, server), [tmp_path / "calc.yaml", tmp_path / "other.yaml"])
