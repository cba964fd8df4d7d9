"""Failures do not end runs: retries honour Retry-After, fallback profiles answer, failing members are routed around."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core import CancellationToken
from autogen_core.models import UserMessage

from huddle.config.settings import Settings, load_settings
from huddle.models.factory import build_client
from huddle.resilience import RetryPolicy, retrying
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.spec import TeamSpec
from huddle.testing import Fault, Reply, Rule, ScriptedServer, ToolCall
from huddle.usage import UsageLedger

KEY = "sk-planted-secret-abcdef123456"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


@pytest.fixture
def settings(server: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    (tmp_path / "huddle.yaml").write_text(
        f"""
models:
  default: {{model: primary, base_url: "{server.base_url}", max_retries: 2, fallback: backup}}
  backup: {{model: secondary, base_url: "{server.base_url}", max_retries: 0}}
"""
    )
    return load_settings()


async def test_rate_limit_is_retried_after_the_servers_hint_and_every_attempt_metered(
    server: ScriptedServer, settings: Settings
) -> None:
    server.add_rule(Rule(times=1, fault=Fault(kind="rate_limit", retry_after=0.3)))
    server.add_rule(Rule(reply=Reply(content="fine", usage=(10, 2))))
    ledger = UsageLedger()
    client = build_client(settings.profile(), ledger, agent="a", profiles=settings.profiles)
    started = time.perf_counter()
    result = await client.create([UserMessage(content="hi", source="user")])
    assert result.content == "fine" and time.perf_counter() - started >= 0.3
    rows = ledger.records()
    assert [(r.model, r.error is not None) for r in rows] == [("primary", True), ("primary", False)]
    assert "RateLimitError" in (rows[0].error or "") and KEY not in (rows[0].error or "")


async def test_primary_always_failing_falls_back_and_the_ledger_shows_both(
    server: ScriptedServer, settings: Settings
) -> None:
    server.add_rule(Rule(system=None, last=None, agent=None, fault=Fault(kind="server_error"), times=3))
    server.add_rule(Rule(reply=Reply(content="from the backup", usage=(10, 2))))
    ledger = UsageLedger()
    client = build_client(settings.profile(), ledger, agent="a", profiles=settings.profiles)
    chunks = [c async for c in client.create_stream([UserMessage(content="hi", source="user")])]
    assert chunks[-1].content == "from the backup"  # type: ignore[union-attr]
    assert [r.model for r in server.chat_requests] == ["primary", "primary", "primary", "secondary"]
    rows = ledger.records()
    assert [(r.profile, r.error is None) for r in rows] == [
        ("default", False),
        ("default", False),
        ("default", False),
        ("backup", True),
    ]


async def test_a_cut_stream_is_retried(server: ScriptedServer, settings: Settings) -> None:
    server.add_rule(Rule(times=1, reply=Reply(content="one two three four"), fault=Fault(kind="cut_stream")))
    server.add_rule(Rule(reply=Reply(content="one two three four", usage=(5, 4))))
    ledger = UsageLedger()
    client = build_client(settings.profile(), ledger, agent="a", profiles=settings.profiles)
    chunks = [c async for c in client.create_stream([UserMessage(content="count", source="user")])]
    assert chunks[-1].content == "one two three four"  # type: ignore[union-attr]
    assert [r.error is None for r in ledger.records()] == [False, True]


async def test_retries_stop_before_a_wait_would_pass_the_total_time_bound() -> None:
    attempts: list[float] = []

    async def unreachable() -> str:
        attempts.append(time.perf_counter())
        raise TimeoutError("no answer")

    policy = RetryPolicy(max_retries=5, base_delay_s=0.2, max_delay_s=1.0, max_total_s=0.5, jitter=0)
    started = time.perf_counter()
    with pytest.raises(TimeoutError, match="no answer"):  # the failure itself, not tenacity's RetryError
        await retrying(policy)(unreachable)
    # Waits of 0.2 s, then 0.4 s: the second would end past 0.5 s, so only two attempts are made.
    assert len(attempts) == 2 and time.perf_counter() - started < 0.5


async def test_a_permanent_failure_is_not_retried_and_the_retry_hook_sees_each_retry() -> None:
    seen: list[tuple[int, str, float]] = []
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        raise (TimeoutError("slow") if calls == 1 else ValueError("bad request"))

    policy = RetryPolicy(max_retries=3, base_delay_s=0.01, jitter=0)
    with pytest.raises(ValueError, match="bad request"):
        await retrying(policy, on_retry=lambda n, exc, wait: seen.append((n, str(exc), wait)))(flaky)
    assert calls == 2 and seen == [(1, "slow", 0.01)]


async def test_a_stream_abandoned_part_way_is_not_retried(server: ScriptedServer, settings: Settings) -> None:
    server.add_rule(Rule(reply=Reply(content="one two three four", usage=(5, 4))))
    ledger = UsageLedger()
    client = build_client(settings.profile(), ledger, agent="a", profiles=settings.profiles)
    stream = client.create_stream([UserMessage(content="count", source="user")])
    async for _ in stream:
        break
    await stream.aclose()
    await asyncio.sleep(0.3)  # a retry would have been sent by now
    assert len(server.chat_requests) == 1


class Crashing(BaseChatAgent):
    """A custom member that always fails."""

    def __init__(self) -> None:
        super().__init__("researcher", "Looks things up.")

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        raise ConnectionError(f"lookup service down (key {KEY})")

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        pass


def crashing_member() -> Crashing:
    return Crashing()


async def test_a_failing_member_is_rerouted_and_the_run_answers(server: ScriptedServer, settings: Settings) -> None:
    plan = {
        "goal": "g",
        "done": False,
        "steps": [
            {
                "id": 1,
                "assignee": "researcher",
                "instruction": "multiply",
                "tool": "calculator",
                "args": json.dumps({"expression": "6*7"}),
                "depends_on": [],
            }
        ],
    }
    server.add_rule(Rule(agent="planner", reply=Reply(content=json.dumps(plan))))
    server.add_rule(Rule(agent="responder", reply=Reply(content="42, with the researcher down")))
    spec = TeamSpec.model_validate(
        {
            "team": {"name": "t"},
            "agents": [
                {"role": "planner"},
                {"use": "tests.test_resilience:crashing_member", "name": "researcher", "reroute_to": "tool_executor"},
                {"role": "tool_executor", "tools": ["calculator"]},
                {"role": "responder"},
            ],
        }
    )
    team = GroupChatTeam(spec, settings)
    result = await team.run("what is six times seven")
    await team.close()
    assert [(d.speaker, d.policy) for d in result.decisions] == [
        ("planner", "rule"),
        ("researcher", "plan"),
        ("tool_executor", "rule"),
        ("responder", "plan"),
    ]
    failure = result.messages[2]
    assert failure.content.startswith("researcher failed: ConnectionError: lookup service down")
    assert KEY not in failure.content
    assert "Step 1: calculator(expression='6*7') -> 42" in result.messages[3].content
    assert result.answer == "42, with the researcher down"


async def test_malformed_tool_call_json_is_re_asked_once(server: ScriptedServer, settings: Settings) -> None:
    server.add_rule(Rule(agent="manager", reply=Reply(content="tool_executor")))
    server.add_rule(
        Rule(
            agent="tool_executor",
            times=1,
            fault=Fault(kind="malformed_tool_json"),
            reply=Reply(tool_calls=[ToolCall(name="calculator", arguments={"expression": "2+2"})]),
        )
    )
    server.add_rule(
        Rule(
            agent="tool_executor",
            reply=Reply(tool_calls=[ToolCall(name="calculator", arguments={"expression": "2+2"})]),
        )
    )
    server.add_rule(Rule(agent="responder", reply=Reply(content="4")))
    spec = TeamSpec.model_validate(
        {"team": {"name": "t"}, "agents": [{"role": "tool_executor", "tools": ["calculator"]}, {"role": "responder"}]}
    )
    team = GroupChatTeam(spec, settings)
    result = await team.run("add two and two")
    await team.close()
    executor_requests = [r for r in server.chat_requests if r.agent == "tool_executor"]
    assert len(executor_requests) == 2
    assert "not valid JSON" in str(executor_requests[1].messages[-1]["content"])
    assert "-> 4" in result.messages[1].content and result.answer == "4"
