"""What a session saves after each turn stays bounded over a long chat: the thread, the planner's context and the
responder's history keep only the tails their readers use, and the whole transcript is kept once, in the turns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from huddle.config.settings import load_settings
from huddle.storage.sessions import SessionStore
from huddle.teams.base import RunResult
from huddle.teams.durable import DurableTeam
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.spec import TeamSpec
from huddle.testing import Reply, Rule, ScriptedServer
from tests.plans import calculator_plan

TEAM = {
    "team": {"name": "calc", "max_turns": 12},
    "agents": [{"role": "planner"}, {"role": "tool_executor", "tools": ["calculator"]}, {"role": "responder"}],
}
PLAN = calculator_plan()
TURNS = 40


@pytest.fixture
def server(tmp_path: Path, isolated_env: Path) -> Iterator[ScriptedServer]:
    with ScriptedServer(
        rules=[Rule(agent="planner", reply=Reply(content=PLAN)), Rule(agent="responder", reply=Reply(content="391."))]
    ) as running:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{running.base_url}', max_retries: 0}}\n"
        )
        yield running


async def test_the_saved_state_stops_growing_while_every_turn_is_kept(server: ScriptedServer) -> None:
    settings = load_settings()
    team = GroupChatTeam(TeamSpec.model_validate(TEAM), settings, session_id="S")
    sizes: list[int] = []
    with SessionStore(settings.sessions_path) as store:
        durable = DurableTeam(team, store, "S")
        await durable.open()
        for turn in range(1, TURNS + 1):
            items = [item async for item in durable.run_stream(f"question {turn:02}: what is 17*23?")]
            assert isinstance(items[-1], RunResult) and items[-1].answer == "391."
            sizes.append(len(json.dumps(store.saved_state("S"))))
        turns = store.turns("S")
    await team.close()
    assert sizes[-1] <= sizes[TURNS // 4 - 1] * 1.05, sizes  # bounded: was about 4x from turn 10 to turn 40
    assert [t.task[:11] for t in turns] == [f"question {n:02}" for n in range(1, TURNS + 1)]
    assert all([m["source"] for m in t.messages] == ["user", "planner", "tool_executor", "responder"] for t in turns)
    last = json.dumps([r.messages for r in server.chat_requests if r.agent == "responder"][-1])
    assert "question 39" in last and "question 37" in last and "question 36" not in last  # its last 3 exchanges
