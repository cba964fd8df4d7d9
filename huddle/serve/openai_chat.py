"""``POST /v1/chat/completions``: a team as an OpenAI chat model (``model`` = the team's name), plain and streamed.

The last user message is the task. Which session it continues: the ``X-Huddle-Session`` header when the client
sends one; otherwise the client is taken to be stateless, resending the whole conversation each time, and the
session is the caller's one whose last finished turn is the exchange the history ends with (its last user message
and the answer after it); a first message starts a new session. The response names the session in its
``X-Huddle-Session`` header either way.

A stream is sent as OpenAI sends one: a role chunk, the answer's content deltas as the team writes them, a finish
chunk, with ``stream_options.include_usage`` a last chunk with ``choices: []`` and the usage, then ``data: [DONE]``.
What the team does meanwhile (who speaks and why, the plan, tool calls, the meter) travels in chunks with an empty
delta and a ``huddle`` field (`TeamEvent.as_json`), which standard clients ignore. A run that ends without an answer
is an OpenAI error: a plain request gets HTTP 502 (429 when a budget stopped it); a stream, whose status has been
sent, gets an ``error`` chunk and ends without ``[DONE]``. A run that pauses for approvals is an answer: the message
says what waits and how to reply, ``huddle.pending`` lists the calls (`huddle.serve.openai_wire`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from huddle.errors import HuddleError
from huddle.serve.events import TeamEvent
from huddle.serve.hub import Hub
from huddle.serve.openai_wire import (
    NO_RESULT,
    RUN_HEADER,
    SESSION_HEADER,
    SSE_HEADERS,
    Admitted,
    Answer,
    ApiError,
    Conversation,
    Lenient,
    Message,
    admit,
    answer_text,
    error_json,
    error_response,
    failure,
    huddle_events,
    owner_of,
    parse,
    session_for,
    sse,
    usage,
)


class StreamOptions(Lenient):
    include_usage: bool = False


class ChatMessage(Lenient):
    role: str
    content: Any = None


class ChatRequest(Lenient):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def conversation(self) -> Conversation:
        return Conversation.of([_message(m, i) for i, m in enumerate(self.messages)], None, "messages")


_ROLES = ("system", "developer", "user", "assistant")


def _message(message: ChatMessage, index: int) -> Message:
    """A chat message as text: a string, or a list of ``text`` parts (no images or files: a team reads text)."""
    where = f"messages[{index}]"
    if message.role not in _ROLES:
        raise ApiError(
            f"{where}.role: {message.role!r} is not one of {', '.join(_ROLES)} (a team calls its own tools)",
            status=400,
            param=f"{where}.role",
        )
    content = message.content
    if content is None or isinstance(content, str):
        return Message(message.role, content or "")  # type: ignore[arg-type]  # checked against _ROLES above
    if not isinstance(content, list):
        raise ApiError(f"{where}.content: expected a string or a list of parts", status=400, param=f"{where}.content")
    texts = []
    for number, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise ApiError(
                f"{where}.content[{number}]: only text parts ({{'type': 'text', 'text': ...}}) are supported",
                status=400,
                param=f"{where}.content[{number}]",
            )
        texts.append(part["text"])
    return Message(message.role, "\n".join(texts))  # type: ignore[arg-type]


def chat_completions(hub: Hub) -> Any:
    async def endpoint(request: Request) -> Response:
        owner = owner_of(request)
        try:
            chat = await parse(request, ChatRequest)
            conversation = chat.conversation()
            hub.team(chat.model)
            session_id = request.headers.get(SESSION_HEADER) or session_for(hub, chat.model, conversation, owner)
            admitted = await admit(hub, chat.model, conversation, session_id, owner)
        except HuddleError as exc:
            return error_response(exc)
        headers = {SESSION_HEADER: admitted.turn.session_id, RUN_HEADER: admitted.turn.run_id}
        if chat.stream:
            include_usage = chat.stream_options is not None and chat.stream_options.include_usage
            chunks = _Chunks(hub, admitted, chat.model, include_usage)
            return StreamingResponse(chunks.stream(), media_type="text/event-stream", headers=SSE_HEADERS | headers)
        return await _plain(hub, admitted, chat.model, headers)

    return endpoint


async def _plain(hub: Hub, admitted: Admitted, model: str, headers: dict[str, str]) -> Response:
    """The whole answer in one ``chat.completion``, with the run's events under ``huddle``."""
    try:
        events = [event async for event in admitted.events()]
    except Exception as exc:  # a bug or a failing part: an OpenAI error, never a traceback in the response
        return error_response(exc, headers)
    result = events[-1] if events and events[-1].kind == "result" else None
    if result is None:
        return error_response(NO_RESULT, headers)
    error = failure(result)
    if error is not None:
        return error_response(error, headers)
    run_id = admitted.turn.run_id
    body = {
        "id": f"chatcmpl-{run_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer_text(result), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(hub, run_id),
        "huddle": {
            "session_id": admitted.turn.session_id,
            "run_id": run_id,
            "events": huddle_events(events),
            "pending": result.data.get("pending", []),
        },
    }
    return JSONResponse(body, headers=headers)


def _usage(hub: Hub, run_id: str) -> dict[str, Any]:
    totals = usage(hub, run_id)
    return {
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "total_tokens": totals.total_tokens,
        "prompt_tokens_details": {"cached_tokens": totals.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": totals.reasoning_tokens},
    }


class _Chunks:
    """One streamed completion: its chunks, written as the team's events arrive."""

    def __init__(self, hub: Hub, admitted: Admitted, model: str, include_usage: bool) -> None:
        self.hub, self.admitted, self.model, self.include_usage = hub, admitted, model, include_usage
        self.id = f"chatcmpl-{admitted.turn.run_id}"
        self.created = int(time.time())

    def chunk(self, delta: dict[str, Any], finish: str | None = None, event: TeamEvent | None = None) -> str:
        return self.body([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], event)

    def body(
        self, choices: list[dict[str, Any]], event: TeamEvent | None = None, usage: dict[str, Any] | None = None
    ) -> str:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            body["usage"] = usage
        if event is not None:
            body["huddle"] = event.as_json()
        return sse(body)

    async def stream(self) -> AsyncIterator[str]:
        yield self.chunk({"role": "assistant", "content": "", "refusal": None})
        answer = Answer()
        try:
            async for event in self.admitted.events():
                if event.kind == "text_delta":
                    if event.text:
                        yield self.chunk({"content": answer.delta(event)})
                    continue
                if event.kind != "result":
                    if event.kind == "text_reset":
                        answer.reset()
                    yield self.chunk({}, event=event)
                    continue
                error = failure(event)
                if error is not None:
                    yield sse(error_json(error)[1])
                    return
                rest = answer.rest(answer_text(event))
                if rest:
                    yield self.chunk({"content": rest})
                yield self.chunk({}, "stop", event)
                break
            else:
                yield sse(error_json(NO_RESULT)[1])
                return
        except Exception as exc:  # the status is sent: the error goes in the stream, which then ends
            yield sse(error_json(exc)[1])
            return
        if self.include_usage:
            yield self.body([], usage=_usage(self.hub, self.admitted.turn.run_id))
        yield "data: [DONE]\n\n"
