"""ScriptedServer end to end: the real ``openai`` client and autogen-ext's client over real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from pydantic import ValidationError

from huddle.testing import Fault, RecordedRequest, Reply, Rule, ScriptedServer, ToolCall

API_KEY = "sk-test-secret-123456"
USER_HI: list[Any] = [{"role": "user", "content": "hi"}]
LOOKUP_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Look up an order by id.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    },
}


def client_for(server: ScriptedServer, **kwargs: Any) -> openai.OpenAI:
    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=server.base_url, api_key=API_KEY, **kwargs)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(fallback=Reply(content="Hello there, scripted world.")) as running:
        yield running


def chat(client: openai.OpenAI, messages: list[Any] | None = None, **kwargs: Any) -> Any:
    return client.chat.completions.create(model="scripted", messages=messages or USER_HI, **kwargs)


def test_plain_reply_reports_the_usage_it_recorded(server: ScriptedServer) -> None:
    result = chat(client_for(server))

    assert result.choices[0].message.content == "Hello there, scripted world."
    assert result.choices[0].finish_reason == "stop"
    assert result.model == "scripted"
    (recorded,) = server.requests
    assert recorded.index == 0 and recorded.status == 200 and recorded.path == "/v1/chat/completions"
    assert recorded.usage is not None and recorded.usage[0] > 0 and recorded.usage[1] > 0
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == recorded.usage
    assert result.usage.total_tokens == sum(recorded.usage)
    assert recorded.body is not None and recorded.body["messages"] == USER_HI


def test_scripted_usage_is_reported_verbatim() -> None:
    with ScriptedServer(fallback=Reply(content="x", usage=(123, 45))) as server:
        result = chat(client_for(server))
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (123, 45, 168)


def test_rules_match_on_system_last_and_agent_header() -> None:
    rules = [
        Rule(system=r"you are the planner", last=r"(?i)plan", reply=Reply(content="PLAN")),
        Rule(agent="critic", reply=Reply(content="CRITIQUE")),
        Rule(last=r"weather", reply=Reply(content="SUNNY")),
    ]
    with ScriptedServer(rules) as server:
        planner = client_for(server, default_headers={"X-Huddle-Agent": "planner"})
        critic = client_for(server, default_headers={"X-Huddle-Agent": "critic"})
        system = {"role": "system", "content": "You are helpful.\nyou are the planner"}

        assert chat(planner, [system, {"role": "user", "content": "Plan a trip"}]).choices[0].message.content == "PLAN"
        assert chat(planner, [{"role": "user", "content": "Plan a trip"}]).choices[0].message.content == "OK"
        assert chat(critic, [system, {"role": "user", "content": "weather?"}]).choices[0].message.content == "CRITIQUE"
        assert chat(planner, [{"role": "user", "content": "weather?"}]).choices[0].message.content == "SUNNY"

    assert [r.agent for r in server.requests] == ["planner", "planner", "critic", "planner"]
    assert [r.rule for r in server.requests] == [0, None, 1, 2]


def test_call_index_times_and_reply_lists() -> None:
    rules = [
        Rule(call_index=1, reply=Reply(content="second call")),
        Rule(times=1, reply=Reply(content="once")),
        Rule(reply=[Reply(content="a"), "b", Reply(content="c")]),
    ]
    with ScriptedServer(rules) as server:
        client = client_for(server)
        answers = [chat(client).choices[0].message.content for _ in range(6)]
        assert answers == ["once", "second call", "a", "b", "c", "c"]
        assert [server.uses(i) for i in range(3)] == [1, 1, 4]

        server.reset()
        assert server.requests == []
        assert chat(client).choices[0].message.content == "once"  # uses and call indexes start over
        assert server.requests[0].index == 0


def test_rules_can_be_added_while_running_and_replies_can_be_dynamic(server: ScriptedServer) -> None:
    client = client_for(server)
    assert chat(client).choices[0].message.content == "Hello there, scripted world."

    def echo(request: RecordedRequest) -> Reply:
        return Reply(content=f"#{request.index}: {request.last_text.upper()}")

    server.add_rule(Rule(last="echo", reply=echo))
    result = chat(client, [{"role": "user", "content": "echo me"}])
    assert result.choices[0].message.content == "#1: ECHO ME"

    def broken(request: RecordedRequest) -> Reply:
        raise RuntimeError("script bug")

    server.add_rule(Rule(last="boom", reply=broken))
    with pytest.raises(openai.InternalServerError, match="script bug"):
        chat(client, [{"role": "user", "content": "boom"}])


def test_tool_call_round_trip(server: ScriptedServer) -> None:
    server.add_rule(Rule(last_role="tool", last=r'"status": "shipped"', reply=Reply(content="Your order shipped.")))
    server.add_rule(
        Rule(has_tools=True, reply=Reply(tool_calls=[ToolCall(name="lookup_order", arguments={"order_id": "10"})]))
    )
    client = client_for(server)
    messages: list[Any] = [{"role": "user", "content": "Where is order 10?"}]

    first = chat(client, messages, tools=[LOOKUP_TOOL])
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls or []
    assert call.type == "function" and call.function.name == "lookup_order" and call.id == "call_0"
    assert json.loads(call.function.arguments) == {"order_id": "10"}

    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"status": "shipped"})})
    second = chat(client, messages, tools=[LOOKUP_TOOL])

    assert second.choices[0].message.content == "Your order shipped."
    assert [r.last_role for r in server.requests] == ["user", "tool"]
    assert [r.rule for r in server.requests] == [1, 0]
    assert server.requests[1].reply == Reply(content="Your order shipped.")


def test_streaming_reassembles_text_and_reports_usage_last(server: ScriptedServer) -> None:
    stream = chat(client_for(server), stream=True, stream_options={"include_usage": True})
    chunks = list(stream)

    content_chunks = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 2
    assert "".join(content_chunks) == "Hello there, scripted world."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    recorded = server.requests[0]
    assert recorded.stream is True
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == recorded.usage


def test_streaming_tool_call_arguments_arrive_in_pieces() -> None:
    call = ToolCall(name="lookup_order", arguments={"order_id": "10", "verbose": True}, id="call_fixed")
    with ScriptedServer(fallback=Reply(tool_calls=[call])) as server:
        chunks = list(chat(client_for(server), stream=True, tools=[LOOKUP_TOOL]))

    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert len(deltas) > 2
    assert deltas[0].id == "call_fixed" and deltas[0].function is not None and deltas[0].function.name == "lookup_order"
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function is not None)
    assert json.loads(arguments) == {"order_id": "10", "verbose": True}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert server.requests[0].usage is None  # stream_options.include_usage was not asked for


def test_include_usage_false_omits_usage_everywhere() -> None:
    with ScriptedServer(fallback=Reply(content="no usage here", include_usage=False)) as server:
        client = client_for(server)
        assert chat(client).usage is None
        chunks = list(chat(client, stream=True, stream_options={"include_usage": True}))

    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    assert [r.usage for r in server.requests] == [None, None]


def test_rate_limit_is_visible_and_a_retry_succeeds() -> None:
    rules = [Rule(fault=Fault(kind="rate_limit", retry_after=0.05), times=1)]
    with ScriptedServer(rules, fallback=Reply(content="after retry")) as server:
        with pytest.raises(openai.RateLimitError) as caught:
            chat(client_for(server))
        assert caught.value.status_code == 429
        assert caught.value.response.headers["retry-after"] == "0.05"
        assert caught.value.code == "rate_limit_exceeded"

        server.reset()
        result = chat(client_for(server, max_retries=1))
        assert result.choices[0].message.content == "after retry"

    assert [(r.status, r.fault) for r in server.requests] == [(429, "rate_limit"), (200, None)]


def test_server_error(server: ScriptedServer) -> None:
    server.add_rule(Rule(fault=Fault(kind="server_error")))
    with pytest.raises(openai.InternalServerError) as caught:
        chat(client_for(server))
    assert caught.value.status_code == 500
    assert server.requests[0].status == 500 and server.requests[0].fault == "server_error"


def test_timeout_fault_times_out_the_client_and_stop_stays_prompt() -> None:
    server = ScriptedServer([Rule(fault=Fault(kind="timeout", delay_s=30.0))]).start()
    try:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            chat(client_for(server, timeout=0.3))
        assert time.monotonic() - started < 5
    finally:
        stopping = time.monotonic()
        server.stop()
    assert time.monotonic() - stopping < 2
    assert server.requests[0].fault == "timeout" and server.requests[0].status == 0


def test_cut_stream_fails_during_iteration(server: ScriptedServer) -> None:
    server.add_rule(Rule(fault=Fault(kind="cut_stream")))
    client = client_for(server)
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):  # raised by the iteration, after some chunks arrived
        for chunk in chat(client, stream=True, stream_options={"include_usage": True}):
            received.append(chunk.choices[0].delta.content or "")
    assert received and "".join(received) != "Hello there, scripted world."

    with pytest.raises(openai.APIConnectionError):
        chat(client)
    assert [r.fault for r in server.requests] == ["cut_stream", "cut_stream"]
    assert [r.usage for r in server.requests] == [None, None]


def test_malformed_tool_json_arrives_unparsable() -> None:
    good = ToolCall(name="lookup_order", arguments={"order_id": "10"})
    rules = [
        Rule(call_index=0, fault=Fault(kind="malformed_tool_json"), reply=Reply(tool_calls=[good])),
        Rule(fault=Fault(kind="malformed_tool_json")),
    ]
    with ScriptedServer(rules) as server:
        client = client_for(server)
        calls = [(chat(client, tools=[LOOKUP_TOOL]).choices[0].message.tool_calls or [None])[0] for _ in range(2)]

    assert [c.function.name for c in calls if c is not None] == ["lookup_order", "unknown_tool"]
    for call in calls:
        assert call is not None
        with pytest.raises(json.JSONDecodeError):
            json.loads(call.function.arguments)
    assert [r.fault for r in server.requests] == ["malformed_tool_json"] * 2


def test_verbatim_string_arguments_are_sent_as_is() -> None:
    call = ToolCall(name="lookup_order", arguments='{"order_id": 10,}')
    with ScriptedServer(fallback=Reply(tool_calls=[call])) as server:
        result = chat(client_for(server))
    tool_calls = result.choices[0].message.tool_calls or []
    assert tool_calls[0].function.arguments == '{"order_id": 10,}'


def _fault_sequence(seed: int) -> list[str | None]:
    with ScriptedServer(fault_rate=0.5, fault_kinds=["rate_limit", "server_error"], seed=seed) as server:
        client = client_for(server)
        for _ in range(16):
            with contextlib.suppress(openai.APIStatusError):
                chat(client)
        return [r.fault for r in server.requests]


def test_fault_rate_is_reproducible_with_a_seed() -> None:
    first = _fault_sequence(seed=7)
    assert first == _fault_sequence(seed=7)
    assert None in first and "rate_limit" in first and "server_error" in first


def test_random_faults_do_not_use_up_rules() -> None:
    rules = [Rule(times=1, reply=Reply(content="scripted once"))]
    with ScriptedServer(rules, fault_rate=1.0, fault_kinds=["server_error"]) as server:
        with pytest.raises(openai.InternalServerError):
            chat(client_for(server))
        server.fault_rate = 0.0
        assert chat(client_for(server)).choices[0].message.content == "scripted once"


def test_authorization_is_redacted(server: ScriptedServer) -> None:
    chat(client_for(server, default_headers={"X-Huddle-Agent": "writer"}))
    recorded = server.requests[0]
    assert recorded.headers["authorization"] == "***"
    assert recorded.headers["x-huddle-agent"] == "writer"
    assert API_KEY not in recorded.model_dump_json()


def http(request: urllib.request.Request) -> tuple[int, Any]:
    """Status and JSON body of a raw request, errors included (a second, non-openai client)."""
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_models_list_and_errors_for_unknown_paths_and_bad_json(server: ScriptedServer) -> None:
    assert [m.id for m in client_for(server).models.list()] == ["scripted"]

    status, body = http(urllib.request.Request(server.base_url + "/nope"))
    assert status == 404 and body["error"]["type"] == "invalid_request_error"

    bad = urllib.request.Request(server.base_url + "/chat/completions", data=b"{not json", method="POST")
    status, body = http(bad)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert [(r.path, r.status, r.index) for r in server.requests] == [
        ("/v1/models", 200, -1),
        ("/v1/nope", 404, -1),
        ("/v1/chat/completions", 400, -1),
    ]


def test_json_response_format_returns_content_as_scripted() -> None:
    with ScriptedServer(fallback=Reply(content='{"verdict": "ok"}')) as server:
        result = chat(client_for(server), response_format={"type": "json_object"})
    assert json.loads(result.choices[0].message.content or "") == {"verdict": "ok"}
    assert server.requests[0].response_format == {"type": "json_object"}


def test_concurrent_requests_are_served_in_parallel() -> None:
    with ScriptedServer(fallback=Reply(content="slow", delay_s=0.3)) as server:
        client = client_for(server)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda _: chat(client).choices[0].message.content, range(8)))
        elapsed = time.monotonic() - started
    assert answers == ["slow"] * 8
    assert elapsed < 1.5
    assert sorted(r.index for r in server.requests) == list(range(8))


def test_invalid_rules_fail_when_written() -> None:
    with pytest.raises(ValidationError):
        Rule(last="(unclosed")
    with pytest.raises(ValidationError):
        Rule(reply=[])
    with pytest.raises(ValidationError):
        Fault.model_validate({"kind": "meteor_strike"})
    with pytest.raises(ValueError, match="fault kind"):
        ScriptedServer(fault_kinds=["meteor_strike"])  # type: ignore[list-item]


async def test_autogen_openai_client_over_http() -> None:
    from autogen_core.models import CreateResult, LLMMessage, SystemMessage, UserMessage
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    rules = [Rule(agent="planner", system="planner", reply=Reply(content="step one, step two", usage=(20, 5)))]
    with ScriptedServer(rules) as server:
        client = OpenAIChatCompletionClient(
            model="scripted",
            base_url=server.base_url,
            api_key=API_KEY,
            max_retries=0,
            default_headers={"X-Huddle-Agent": "planner"},
            model_info={
                "vision": False,
                "function_calling": True,
                "json_output": True,
                "family": "unknown",
                "structured_output": True,
            },
        )
        try:
            messages: list[LLMMessage] = [
                SystemMessage(content="You are the planner."),
                UserMessage(content="Plan it.", source="user"),
            ]
            result = await client.create(messages)
            assert result.content == "step one, step two"
            assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (20, 5)

            pieces: list[str] = []
            final: CreateResult | None = None
            async for item in client.create_stream(messages, include_usage=True):
                if isinstance(item, str):
                    pieces.append(item)
                else:
                    final = item
            assert "".join(pieces) == "step one, step two"
            assert final is not None and final.content == "step one, step two"
            assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (20, 5)
        finally:
            await client.close()

    expected = [("planner", False, (20, 5)), ("planner", True, (20, 5))]
    assert [(r.agent, r.stream, r.usage) for r in server.requests] == expected
