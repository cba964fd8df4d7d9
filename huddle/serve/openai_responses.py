"""``POST /v1/responses`` and ``GET /v1/responses/{id}``: a team behind OpenAI's Responses API.

A response is one turn: its id is ``resp_<run id>``, so ``previous_response_id`` names the turn a new one follows and
thereby its session (found through the session store's turns). Without it, the ``X-Huddle-Session`` header, or an
``input`` list whose history ends with a turn of the caller's (as for Chat Completions), picks the session; else a
new one starts. ``input`` is a string or a list of messages whose last is the user's; ``instructions`` and system or
developer messages go before the task.

A stream is the events the openai SDK's ``responses.stream``/``create(stream=True)`` parse, numbered by
``sequence_number``: ``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta`` as the answer is written, ``response.output_text
.done``, ``response.content_part.done``, ``response.output_item.done``, ``response.completed`` (with the ledger's
usage). The team's own events come between them as ``huddle.event`` events (``{"huddle": TeamEvent.as_json()}``),
a type standard clients pass over. A run without an answer ends the stream with ``response.failed``; a plain
request gets OpenAI's error shape (HTTP 502, or 429 when a budget stopped it). A run that pauses for approvals is a
completed response whose text says what waits and how to reply, its calls in ``huddle.pending``; a reply (with
``previous_response_id``, the session header or the history) of ``approve`` or ``deny <reason>`` decides them
(`huddle.serve.openai_wire`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from huddle.errors import HuddleError
from huddle.serve.approvals import waiting_text
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
    turn_of_response,
    usage,
)
from huddle.storage.sessions import TurnStatus

_ROLES = ("system", "developer", "user", "assistant")
_TEXT_PARTS = ("input_text", "output_text", "text")
_STATUS: dict[TurnStatus, str] = {
    "done": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "running": "in_progress",
    "awaiting_approval": "completed",
}


class ResponsesRequest(Lenient):
    model: str = Field(min_length=1)
    input: str | list[Any]
    instructions: str | None = None
    previous_response_id: str | None = None
    stream: bool = False

    def conversation(self) -> Conversation:
        if isinstance(self.input, str):
            return Conversation.of([Message("user", self.input)], self.instructions, "input")
        return Conversation.of([_message(m, i) for i, m in enumerate(self.input)], self.instructions, "input")


def _message(item: Any, index: int) -> Message:
    """An ``input`` item as text: a message (``type`` ``message`` or none) with a string or text parts."""
    where = f"input[{index}]"
    if not isinstance(item, dict) or item.get("type", "message") != "message" or item.get("role") not in _ROLES:
        raise ApiError(
            f"{where}: expected a message with a role of {', '.join(_ROLES)} (a team calls its own tools)",
            status=400,
            param=where,
        )
    content = item.get("content")
    if isinstance(content, str):
        return Message(item["role"], content)
    if not isinstance(content, list):
        raise ApiError(f"{where}.content: expected a string or a list of parts", status=400, param=f"{where}.content")
    texts = []
    for number, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise ApiError(
                f"{where}.content[{number}]: only text parts ({', '.join(_TEXT_PARTS)}) are supported",
                status=400,
                param=f"{where}.content[{number}]",
            )
        texts.append(part["text"])
    return Message(item["role"], "\n".join(texts))


def create(hub: Hub) -> Any:
    async def endpoint(request: Request) -> Response:
        owner = owner_of(request)
        try:
            body = await parse(request, ResponsesRequest)
            conversation = body.conversation()
            hub.team(body.model)
            session_id = request.headers.get(SESSION_HEADER)
            if session_id is None and body.previous_response_id is not None:
                turn, _ = turn_of_response(hub, body.previous_response_id, owner, "previous_response_id")
                session_id = turn.session_id
            session_id = session_id or session_for(hub, body.model, conversation, owner)
            admitted = await admit(hub, body.model, conversation, session_id, owner)
        except HuddleError as exc:
            return error_response(exc)
        headers = {SESSION_HEADER: admitted.turn.session_id, RUN_HEADER: admitted.turn.run_id}
        shape = _Shape(hub, admitted, body)
        if body.stream:
            return StreamingResponse(shape.stream(), media_type="text/event-stream", headers=SSE_HEADERS | headers)
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
        completed = shape.response("completed", answer_text(result), usage=True)
        completed["huddle"]["events"] = huddle_events(events)
        completed["huddle"]["pending"] = result.data.get("pending", [])
        return JSONResponse(completed, headers=headers)

    return endpoint


def retrieve(hub: Hub) -> Any:
    async def endpoint(request: Request) -> Response:
        response_id = request.path_params["response_id"]
        try:
            turn, team = turn_of_response(hub, response_id, owner_of(request), None)
        except HuddleError as exc:
            return error_response(exc)
        pending = [p.model_dump(mode="json") for p in hub.pending(turn.session_id)]
        waiting = turn.status == "awaiting_approval" and pending
        body = _response(
            hub,
            turn.run_id,
            team,
            status=_STATUS[turn.status],
            text=waiting_text(pending) if waiting else turn.answer if turn.status == "done" else None,
            created=int(turn.started),
            session_id=turn.session_id,
        )
        if waiting:
            body["huddle"]["pending"] = pending
        if turn.status == "failed":
            body["error"] = {"code": "run_failed", "message": turn.error or "the team gave no answer"}
        return JSONResponse(body, headers={SESSION_HEADER: turn.session_id})

    return endpoint


def _response(
    hub: Hub,
    run_id: str,
    model: str,
    *,
    status: str,
    text: str | None,
    created: int,
    session_id: str,
    instructions: str | None = None,
    previous: str | None = None,
    usage_now: bool = True,
) -> dict[str, Any]:
    """A ``response`` object: the answer as one output message when there is one, the ledger's usage."""
    output = [_item(run_id, "completed", _part(text))] if text is not None else []
    totals = usage(hub, run_id) if usage_now else None
    return {
        "id": f"resp_{run_id}",
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": instructions,
        "model": model,
        "output": output,
        "parallel_tool_calls": False,
        "previous_response_id": previous,
        "temperature": None,
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "metadata": {},
        "usage": None
        if totals is None
        else {
            "input_tokens": totals.prompt_tokens,
            "input_tokens_details": {"cached_tokens": totals.cached_tokens},
            "output_tokens": totals.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": totals.reasoning_tokens},
            "total_tokens": totals.total_tokens,
        },
        "huddle": {"session_id": session_id, "run_id": run_id},
    }


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _item(run_id: str, status: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"msg_{run_id}", "type": "message", "status": status, "role": "assistant", "content": list(parts)}


class _Shape:
    """One response of a turn, as a whole object or as its stream of events."""

    def __init__(self, hub: Hub, admitted: Admitted, body: ResponsesRequest) -> None:
        self.hub, self.admitted, self.body = hub, admitted, body
        self.created = int(time.time())
        self.sequence = 0
        self.run_id = admitted.turn.run_id

    def response(self, status: str, text: str | None, *, usage: bool) -> dict[str, Any]:
        return _response(
            self.hub,
            self.run_id,
            self.body.model,
            status=status,
            text=text,
            created=self.created,
            session_id=self.admitted.turn.session_id,
            instructions=self.body.instructions,
            previous=self.body.previous_response_id,
            usage_now=usage,
        )

    def event(self, kind: str, **fields: Any) -> str:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse(data, event=kind)

    def where(self) -> dict[str, Any]:
        return {"item_id": f"msg_{self.run_id}", "output_index": 0, "content_index": 0}

    def delta(self, text: str) -> str:
        return self.event("response.output_text.delta", **self.where(), delta=text, logprobs=[])

    async def stream(self) -> AsyncIterator[str]:
        yield self.event("response.created", response=self.response("in_progress", None, usage=False))
        yield self.event("response.in_progress", response=self.response("in_progress", None, usage=False))
        yield self.event("response.output_item.added", output_index=0, item=_item(self.run_id, "in_progress"))
        yield self.event("response.content_part.added", **self.where(), part=_part(""))
        answer = Answer()
        result: TeamEvent | None = None
        try:
            async for event in self.admitted.events():
                if event.kind == "text_delta":
                    if event.text:
                        yield self.delta(answer.delta(event))
                    continue
                if event.kind == "text_reset":
                    answer.reset()
                if event.kind == "result":
                    result = event
                    break
                yield self.event("huddle.event", huddle=event.as_json())
        except Exception as exc:  # the status is sent: the failure goes in the stream, which then ends
            yield self.failed(error_json(exc)[1]["error"])
            return
        error = NO_RESULT if result is None else failure(result)
        if error is not None or result is None:
            yield self.failed(error_json(error or NO_RESULT)[1]["error"])
            return
        text = answer_text(result)
        rest = answer.rest(text)
        if rest:
            yield self.delta(rest)
        yield self.event("huddle.event", huddle=result.as_json())
        yield self.event("response.output_text.done", **self.where(), text=text, logprobs=[])
        yield self.event("response.content_part.done", **self.where(), part=_part(text))
        item = _item(self.run_id, "completed", _part(text))
        yield self.event("response.output_item.done", output_index=0, item=item)
        completed = self.response("completed", text, usage=True)
        completed["huddle"]["pending"] = result.data.get("pending", [])
        yield self.event("response.completed", response=completed)

    def failed(self, error: dict[str, Any]) -> str:
        response = self.response("failed", None, usage=True)
        response["error"] = {"code": error["code"] or "server_error", "message": error["message"]}
        return self.event("response.failed", response=response)
