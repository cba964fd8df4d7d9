"""The framework's intent router, configured in a team YAML with nothing shop-specific: it takes the planner's role
by declaring it (no reaching into the manager), plans each label's configured tool steps with no model call, and
refuses what it cannot serve with one config error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from huddle import prompts
from huddle.config.settings import Settings, load_settings
from huddle.errors import ConfigError
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.spec import TeamSpec
from huddle.testing import Reply, Rule, ScriptedServer

ROUTER = "huddle.agents.intent_router:IntentRouter"
CONFIG: dict[str, Any] = {
    "examples": {
        "time": ["What time is it now?", "Tell me the current time", "Which day of the week is it today?"],
        "greeting": ["Hello!", "Good morning to you", "Hi, how are you?"],
        "maths": ["What is twelve times seven?", "Add these numbers up for me", "Compute a percentage"],
    },
    "plans": {"time": [{"tool": "clock", "args": {"timezone": "Europe/Paris"}}], "maths": [{"tool": "calculator"}]},
    "notes": {"greeting": "Greet the user back warmly."},
    "filler": "greeting",
}


def router_team(settings: Settings, config: dict[str, Any], *extra: dict[str, Any]) -> GroupChatTeam:
    spec = TeamSpec.model_validate(
        {
            "team": {"name": "desk"},
            "agents": [
                *extra,
                {"use": ROUTER, "name": "router", "config": config},
                {"role": "tool_executor", "tools": ["clock", "calculator"]},
                {"role": "responder"},
            ],
        }
    )
    return GroupChatTeam(spec, settings)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(fallback="Noted.") as running:
        running.add_rule(Rule(agent="responder", reply=Reply(content="Here you are.")))
        yield running


@pytest.fixture
def settings(server: ScriptedServer, tmp_path: Path) -> Settings:
    (tmp_path / "huddle.yaml").write_text(
        f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: 0}}\n"
    )
    return load_settings()


async def test_the_router_plans_the_labels_tool_steps_as_the_teams_planner(settings: Settings) -> None:
    team = router_team(settings, CONFIG)
    try:
        timed = await team.run("what's the time in Paris right now")
        greeted = await team.run("hey there, good evening")
    finally:
        await team.close()

    assert team.manager.roles.planner == "router"
    assert [(d.speaker, d.policy) for d in timed.decisions] == [
        ("router", "rule"),
        ("tool_executor", "plan"),
        ("responder", "plan"),
    ]
    router_note = next(m for m in timed.messages if m.source == "router").content
    assert router_note.startswith("Intent: time (by embedding: ") and "no model call" in router_note
    assert "clock(timezone='Europe/Paris') ->" in next(m for m in timed.messages if m.source == "tool_executor").content
    assert set(timed.usage.by_agent) == {"responder"}  # neither the router nor the tool executor asked a model

    assert [d.speaker for d in greeted.decisions] == ["router", "responder"]
    assert "Greet the user back warmly." in next(m for m in greeted.messages if m.source == "router").content


async def test_an_unclear_message_asks_the_model_constrained_to_the_labels(
    server: ScriptedServer, settings: Settings
) -> None:
    server.add_rule(Rule(agent="router", reply=Reply(content='{"intent": "maths"}')))
    team = router_team(settings, CONFIG)
    try:
        result = await team.run("seventeen and also the other one")
    finally:
        await team.close()
    assert result.usage.by_agent["router"].calls == 1
    assert "Intent: maths (by model; the closest examples were unclear" in result.messages[1].content
    request = next(r for r in server.chat_requests if r.agent == "router")
    assert all(label in str(request.response_format) for label in CONFIG["examples"])


@pytest.mark.parametrize(
    ("config", "extra", "error"),
    [
        ({**CONFIG, "plans": {"weather": [{"tool": "clock"}]}}, [], "plans, notes and filler name intents without"),
        ({"examples": {"only": ["one label"]}}, [], "at least two intents"),
        (CONFIG, [{"role": "planner"}], "planner and router both play the planner; keep one of them"),
    ],
)
def test_a_router_it_cannot_build_is_one_config_error(
    settings: Settings, config: dict[str, Any], extra: list[dict[str, Any]], error: str
) -> None:
    with pytest.raises(ConfigError, match=error):
        router_team(settings, config, *extra)


def test_a_plugins_prompts_load_by_package_with_the_same_template_rules() -> None:
    responder = prompts.load("support_shop.prompts:support_responder")
    assert responder.meta["description"].startswith("Writes the reply to the customer")
    assert responder.placeholders == {"name"}
    with pytest.raises(prompts.PromptError, match="no package 'no_such_plugin' is installed"):
        prompts.load("no_such_plugin:responder")
