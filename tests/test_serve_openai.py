"""``huddle serve``'s OpenAI-compatible endpoints, driven by the real openai SDK over HTTP against a served team whose
model is the scripted server (it answers with what it was sent, so what a turn remembers shows in its answer)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from starlette.applications import Starlette

from huddle.serve import app
from huddle.serve.hub import Hub
from huddle.testing import Fault, RecordedRequest, Reply, Rule, ScriptedServer
from tests.serving import scripted_settings, serving


def echo_request(request: RecordedRequest) -> Reply:
    return Reply(content="ANSWER " + str(request.messages[-1]["content"]))


def slow_echo(request: RecordedRequest) -> Reply:
    return Reply(content="SLOW " + str(request.messages[-1]["content"]), delay_s=1.0)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(
        rules=[
            Rule(agent="responder", last="slowly", reply=slow_echo),
            Rule(agent="responder", last="fail", fault=Fault(kind="server_error")),
            Rule(agent="responder", reply=echo_request),
        ]
    ) as running:
        yield running


@pytest.fixture
def served(tmp_path: Path, server: ScriptedServer) -> Iterator[tuple[Starlette, str]]:
    application = app(scripted_settings(tmp_path, server), ["assistant"])
    with serving(application) as url:
        yield application, url


@pytest.fixture
def client(served: tuple[Starlette, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=served[1] + "/v1", api_key="unused", max_retries=0)


def hub_of(served: tuple[Starlette, str]) -> Hub:
    hub: Hub = served[0].state.hub
    return hub


def ledger_usage(served: tuple[Starlette, str], run_id: str) -> tuple[int, int]:
    totals = hub_of(served).ledger.totals(run_id=run_id)
    assert totals.calls >= 1
    return totals.prompt_tokens, totals.completion_tokens


def recalled(server: ScriptedServer, start: int, answer: str) -> bool:
    """Whether a request since the `start`-th sent `answer` back to a model as an earlier turn of the conversation
    (an assistant message: shared memory's recall of it would be part of a user message)."""
    return any(
        m["role"] == "assistant" and answer in json.dumps(m["content"])
        for r in server.chat_requests[start:]
        for m in r.messages
    )


def test_models_lists_the_served_teams(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [(m.id, m.object, m.owned_by) for m in models] == [("assistant", "model", "huddle")]
    assert client.models.retrieve("assistant").id == "assistant"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nobody")


def test_chat_completion_answers_and_a_resent_history_continues_its_session(
    client: openai.OpenAI, served: tuple[Starlette, str], server: ScriptedServer
) -> None:
    first = client.chat.completions.with_raw_response.create(
        model="assistant", messages=[{"role": "user", "content": "my cat is called Tom"}]
    )
    completion = first.parse()
    session, run_id = first.headers["x-huddle-session"], first.headers["x-huddle-run"]
    answer = completion.choices[0].message.content
    assert answer == "ANSWER my cat is called Tom"
    assert completion.choices[0].finish_reason == "stop" and completion.model == "assistant"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == ledger_usage(served, run_id)
    extension = (completion.model_extra or {})["huddle"]
    assert extension["session_id"] == session and extension["run_id"] == run_id
    speakers = [(e["source"], e["data"]["policy"]) for e in extension["events"] if e["kind"] == "speaker"]
    assert speakers[0] == ("memory", "rule") and speakers[-1][0] == "responder"

    history = [
        {"role": "user", "content": "my cat is called Tom"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "what is my cat called?"},
    ]
    start = len(server.chat_requests)
    second = client.chat.completions.with_raw_response.create(model="assistant", messages=history)  # type: ignore[arg-type]
    assert second.headers["x-huddle-session"] == session
    assert recalled(server, start, "ANSWER my cat is called Tom")

    start = len(server.chat_requests)
    fresh = client.chat.completions.with_raw_response.create(
        model="assistant", messages=[{"role": "user", "content": "my cat is called Tom"}]
    )
    assert fresh.headers["x-huddle-session"] != session  # a first message is a new conversation
    assert not recalled(server, start, "ANSWER my cat is called Tom")


def test_chat_completion_streams_openai_chunks_with_the_ledgers_usage_last(
    client: openai.OpenAI, served: tuple[Starlette, str]
) -> None:
    chunks = list(
        client.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "tell me about streams"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "ANSWER tell me about streams"
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    run_id = chunks[0].id.removeprefix("chatcmpl-")
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == ledger_usage(served, run_id)
    kinds = [(c.model_extra or {}).get("huddle", {}).get("kind") for c in chunks]
    assert {"speaker", "usage", "message", "result"} <= set(kinds)
    assert kinds.index("speaker") < next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)


def test_a_stream_ends_with_done_on_the_wire(served: tuple[Starlette, str]) -> None:
    body = {"model": "assistant", "messages": [{"role": "user", "content": "hi there"}], "stream": True}
    with httpx.stream("POST", served[1] + "/v1/chat/completions", json=body, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_responses_chain_sessions_by_previous_response_id_plain_and_streamed(
    client: openai.OpenAI, served: tuple[Starlette, str], server: ScriptedServer
) -> None:
    first = client.responses.create(model="assistant", input="the launch code is Bluebird")
    assert first.output_text == "ANSWER the launch code is Bluebird" and first.status == "completed"
    assert first.usage is not None
    run_id = first.id.removeprefix("resp_")
    assert (first.usage.input_tokens, first.usage.output_tokens) == ledger_usage(served, run_id)

    start = len(server.chat_requests)
    with client.responses.stream(
        model="assistant", input="what is the launch code?", previous_response_id=first.id
    ) as stream:
        types = [event.type for event in stream]
        second = stream.get_final_response()
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "response.output_text.delta" in types and "huddle.event" in types
    assert recalled(server, start, "ANSWER the launch code is Bluebird")
    assert second.previous_response_id == first.id and second.usage is not None
    second_run = second.id.removeprefix("resp_")
    assert (second.usage.input_tokens, second.usage.output_tokens) == ledger_usage(served, second_run)
    assert (first.model_extra or {})["huddle"]["session_id"] == (second.model_extra or {})["huddle"]["session_id"]

    assert client.responses.retrieve(first.id).output_text == first.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="assistant", input="hi", previous_response_id="resp_nosuchrun")


def test_unknown_model_is_a_404_in_openais_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "model_not_found" and raised.value.param == "model"
    assert isinstance(raised.value.body, dict) and "nobody" in raised.value.body["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "assistant"}, "messages"),
        ({"model": "assistant", "messages": []}, "messages"),
        ({"model": "assistant", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"model": "assistant", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0]"),
        ({"model": "assistant", "messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ],
)
def test_an_invalid_chat_body_is_a_400_naming_the_field(
    client: openai.OpenAI, body: dict[str, object], field: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.post("/chat/completions", body=body, cast_to=httpx.Response)
    assert raised.value.status_code == 400
    assert raised.value.message.startswith(field) or (raised.value.param or "").startswith(field)


def test_a_body_that_is_not_json_is_a_400(served: tuple[Starlette, str]) -> None:
    response = httpx.post(served[1] + "/v1/responses", content=b"{not json", timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_a_second_message_while_the_session_answers_is_a_409(client: openai.OpenAI) -> None:
    def ask(text: str) -> str:
        try:
            reply = client.chat.completions.create(
                model="assistant",
                messages=[{"role": "user", "content": text}],
                extra_headers={"X-Huddle-Session": "shared-session"},
            )
        except openai.ConflictError as exc:
            assert exc.code == "session_busy"
            return "409"
        return reply.choices[0].message.content or ""

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(ask, "answer slowly please")
        time.sleep(0.4)
        second = pool.submit(ask, "and now this")
        assert sorted([first.result(), second.result()]) == ["409", "SLOW answer slowly please"]


def test_a_failed_run_is_an_openai_error_plain_and_streamed(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="assistant", messages=[{"role": "user", "content": "fail now"}])
    assert raised.value.status_code == 502 and raised.value.code == "run_failed"
    stream = client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "fail again"}], stream=True
    )
    with pytest.raises(openai.APIError) as streamed:
        list(stream)
    assert "error" in streamed.value.message
    with client.responses.stream(model="assistant", input="fail in a response") as events:
        types = [event.type for event in events]
    assert types[-1] == "response.failed"


def test_instructions_go_before_the_task_and_a_resent_history_with_them_still_finds_its_session(
    client: openai.OpenAI, server: ScriptedServer
) -> None:
    system: ChatCompletionMessageParam = {"role": "system", "content": "Reply in French."}
    first = client.chat.completions.with_raw_response.create(
        model="assistant", messages=[system, {"role": "user", "content": "hello there"}]
    )
    asked = server.chat_requests[-1].messages[-1]["content"]
    assert "Reply in French.\n\nhello there" in str(asked)
    answer = first.parse().choices[0].message.content
    again = client.chat.completions.with_raw_response.create(
        model="assistant",
        messages=[
            system,
            {"role": "user", "content": "hello there"},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "and goodbye"},
        ],
    )
    assert again.headers["x-huddle-session"] == first.headers["x-huddle-session"]
    response = client.responses.create(model="assistant", instructions="Be brief.", input="hello again")
    assert "Be brief.\n\nhello again" in response.output_text and response.instructions == "Be brief."


def test_closing_a_stream_early_saves_the_turn_as_cancelled(served: tuple[Starlette, str]) -> None:
    body = {"model": "assistant", "messages": [{"role": "user", "content": "answer slowly please"}], "stream": True}
    with httpx.stream("POST", served[1] + "/v1/chat/completions", json=body, timeout=30) as response:
        session = response.headers["x-huddle-session"]
        next(response.iter_lines())  # the role chunk, sent before the model answers
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        turns = hub_of(served).turns(session, None)
        if turns and turns[-1].status != "running":
            break
        time.sleep(0.1)
    assert [t.status for t in turns] == ["cancelled"]


def test_a_failed_response_is_retrievable_as_failed(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        client.responses.with_raw_response.create(model="assistant", input="fail this one")
    assert raised.value.status_code == 502
    run_id = raised.value.response.headers["x-huddle-run"]
    failed = client.responses.retrieve(f"resp_{run_id}")
    assert failed.status == "failed" and failed.output == []
