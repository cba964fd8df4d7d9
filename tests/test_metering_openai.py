"""The real openai client, through autogen, over real HTTP to the scripted server: the ledger must match the server.

Every number the server reported must land in the ledger token for token, for plain calls, streamed calls and a full
tool-call round trip made by an autogen AssistantAgent.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage, ToolCallExecutionEvent
from autogen_core.models import UserMessage

from huddle.config.settings import ModelProfile, Price
from huddle.models.factory import AGENT_HEADER, build_client
from huddle.testing import Fault, Reply, Rule, ScriptedServer, ToolCall
from huddle.usage import UsageLedger, usage_scope

KEY = "sk-test-abcdefghijklmnop"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


@pytest.fixture
def profile(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> ModelProfile:
    monkeypatch.setenv("HUDDLE_TEST_KEY", KEY)
    return ModelProfile(
        name="scripted-server",
        model="scripted",
        base_url=server.base_url,
        api_key_env="HUDDLE_TEST_KEY",
        price=Price(input_per_mtok=1.0, output_per_mtok=2.0),
        max_retries=0,
        timeout_s=10,
    )


def served_usage(server: ScriptedServer) -> list[tuple[int, int]]:
    return [r.usage for r in server.requests if r.usage is not None]


def ledger_usage(ledger: UsageLedger) -> list[tuple[int, int]]:
    return [(r.prompt_tokens, r.completion_tokens) for r in ledger.records()]


def add(a: int, b: int) -> int:
    """Add two integers."""
    calls.append((a, b))
    return a + b


calls: list[tuple[int, int]] = []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_tool_round_trip_is_metered_exactly(server: ScriptedServer, profile: ModelProfile, stream: bool) -> None:
    calls.clear()
    server.add_rule(Rule(last_role="tool", reply=Reply(content="2 + 3 = 5, computed by the add tool.")))
    server.add_rule(Rule(has_tools=True, reply=Reply(tool_calls=[ToolCall(name="add", arguments={"a": 2, "b": 3})])))
    ledger = UsageLedger()
    agent = AssistantAgent(
        "calculator",
        model_client=build_client(profile, ledger, agent="calculator"),
        tools=[add],
        reflect_on_tool_use=True,
        model_client_stream=stream,
    )
    with usage_scope(run_id="run-1", session_id="sess-1"):
        result = await agent.run(task="What is 2 + 3?")

    assert calls == [(2, 3)]
    assert any(isinstance(m, ToolCallExecutionEvent) and m.content[0].content == "5" for m in result.messages)
    final = result.messages[-1]
    assert isinstance(final, TextMessage) and final.content == "2 + 3 = 5, computed by the add tool."

    assert [r.stream for r in server.requests] == [stream, stream]
    assert all(r.agent == "calculator" for r in server.requests)
    rows = ledger.records()
    assert ledger_usage(ledger) == served_usage(server)
    assert all(r.token_source == "server" and r.streamed == stream for r in rows)
    assert {(r.run_id, r.session_id, r.agent, r.model) for r in rows} == {("run-1", "sess-1", "calculator", "scripted")}
    totals = ledger.totals(run_id="run-1")
    prompt = sum(p for p, _ in served_usage(server))
    completion = sum(c for _, c in served_usage(server))
    assert (totals.prompt_tokens, totals.completion_tokens) == (prompt, completion)
    assert totals.cost_usd == pytest.approx((prompt * 1.0 + completion * 2.0) / 1e6)


async def test_streamed_reply_arrives_in_chunks_and_is_metered(server: ScriptedServer, profile: ModelProfile) -> None:
    server.add_rule(Rule(reply=Reply(content="one two three four five six", usage=(321, 7))))
    ledger = UsageLedger()
    client = build_client(profile, ledger, agent="responder")
    chunks = [c async for c in client.create_stream([UserMessage(content="count", source="user")])]
    text = [c for c in chunks if isinstance(c, str)]
    assert len(text) >= 2 and "".join(text) == "one two three four five six"
    assert server.requests[-1].body is not None
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}
    assert ledger_usage(ledger) == [(321, 7)]


async def test_missing_server_usage_is_estimated_and_marked(server: ScriptedServer, profile: ModelProfile) -> None:
    server.add_rule(Rule(reply=Reply(content="a reply without usage numbers", include_usage=False)))
    ledger = UsageLedger()
    client = build_client(profile, ledger, agent="planner")
    await client.create([UserMessage(content="plan something for me please", source="user")])
    (row,) = ledger.records()
    assert server.requests[-1].usage is None
    assert row.token_source == "estimate"
    assert row.completion_tokens == 5  # "a reply without usage numbers" in cl100k_base
    assert 6 <= row.prompt_tokens <= 20


async def test_failed_call_is_recorded_without_the_key(server: ScriptedServer, profile: ModelProfile) -> None:
    server.add_rule(Rule(fault=Fault(kind="server_error")))
    ledger = UsageLedger()
    client = build_client(profile, ledger, agent="planner")
    with pytest.raises(Exception, match=r"500|Internal"):
        await client.create([UserMessage(content="hi", source="user")])
    (row,) = ledger.records()
    assert row.error and row.token_source == "none" and row.total_tokens == 0
    assert KEY not in row.error
    assert server.requests[-1].headers["authorization"] == "***"
    assert server.requests[-1].headers[AGENT_HEADER.lower()] == "planner"
