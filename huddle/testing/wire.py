"""The OpenAI wire format a scripted server speaks: JSON responses with Content-Length, SSE streams in chunked
transfer-encoding, ``chat.completion`` and ``chat.completion.chunk`` objects, OpenAI-style error bodies, and usage
counted with tiktoken when a reply scripts none.

The functions write to a `http.server.BaseHTTPRequestHandler`; what to answer is decided by
`huddle.testing.ScriptedServer`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

from huddle.models.tokens import count_text
from huddle.testing.faults import Fault
from huddle.testing.replies import Reply
from huddle.testing.rules import RecordedRequest, text_of


def error_body(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error object, so the client's error classes and messages look like production."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def model_object(model: str) -> dict[str, Any]:
    """One entry of ``GET /v1/models``, so clients that list or look up models before a chat find theirs."""
    return {"id": model, "object": "model", "created": 0, "owned_by": "huddle-scripted"}


def send_json(
    handler: BaseHTTPRequestHandler,
    status: int,
    payload: Any,
    headers: Sequence[tuple[str, str]] = (),
    *,
    cut: bool = False,
) -> None:
    """A complete JSON response with Content-Length, so the keep-alive connection stays usable; with `cut`, the
    Content-Length still promises the whole body but only half is sent before the server hangs up."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in headers:
        handler.send_header(name, value)
    handler.end_headers()
    if cut:
        handler.wfile.write(data[: len(data) // 2])
        handler.close_connection = True
        return
    handler.wfile.write(data)


def start_chunked(handler: BaseHTTPRequestHandler, headers: Sequence[tuple[str, str]] = ()) -> None:
    """Start an SSE response with chunked transfer-encoding: a missing final chunk is then a detectable error."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Transfer-Encoding", "chunked")
    for name, value in headers:
        handler.send_header(name, value)
    handler.end_headers()


def write_chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    """One chunk, flushed at once: a client reading a stream must see each event as it is sent."""
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    handler.wfile.flush()


def end_chunked(handler: BaseHTTPRequestHandler) -> None:
    """The terminating chunk: without it the client must report a cut stream."""
    handler.wfile.write(b"0\r\n\r\n")
    handler.wfile.flush()


def usage_of(record: RecordedRequest, reply: Reply) -> tuple[int, int]:
    """Scripted usage, else tiktoken counts: every message's text and tool calls plus the tools offered (prompt);
    the content plus each tool call's name and arguments, plus the reply's reasoning tokens (completion)."""
    if reply.usage is not None:
        return reply.usage
    prompt_parts: list[str] = []
    for message in record.messages:
        prompt_parts.append(text_of(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = (call.get("function") or {}) if isinstance(call, dict) else {}
            prompt_parts.append(f"{function.get('name', '')}{function.get('arguments', '')}")
    tools = (record.body or {}).get("tools")
    if tools:
        prompt_parts.append(json.dumps(tools, sort_keys=True))
    completion_parts = [reply.content or ""]
    completion_parts += [f"{call.name}{call.arguments_json()}" for call in reply.tool_calls]
    completion = count_text("\n".join(completion_parts), record.model) + reply.reasoning_tokens
    return count_text("\n".join(prompt_parts), record.model), completion


def report_usage(record: RecordedRequest, reply: Reply) -> dict[str, Any]:
    """The API's ``usage`` object for `reply`, noted on `record`: the counts, and the details objects OpenAI always
    sends (cached prompt tokens, at most the prompt; reasoning tokens, at most the completion)."""
    prompt, completion = usage_of(record, reply)
    cached = min(reply.cached_tokens or 0, prompt)
    record.usage, record.cached_tokens = (prompt, completion), cached
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": min(reply.reasoning_tokens, completion),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def send_error(handler: BaseHTTPRequestHandler, record: RecordedRequest, status: int, fault: Fault) -> None:
    """A scripted 429 (with ``Retry-After`` in seconds and ms, as OpenAI sends) or 500, recorded on `record`."""
    headers: list[tuple[str, str]] = []
    if status == 429:
        message = "Rate limit reached for requests (scripted). Please try again later."
        payload = error_body(message, "requests", "rate_limit_exceeded")
        headers = [
            ("Retry-After", f"{fault.retry_after:g}"),
            ("retry-after-ms", str(round(fault.retry_after * 1000))),
        ]
    else:
        message = "The server had an error while processing your request (scripted)."
        payload = error_body(message, "server_error")
    record.status = status
    record.error = message
    send_json(handler, status, payload, [*headers, ("x-request-id", f"req_scripted_{record.index}")])


def send_completion(handler: BaseHTTPRequestHandler, record: RecordedRequest, reply: Reply, *, cut: bool) -> None:
    """A ``chat.completion`` object; `cut` promises the whole body and hangs up halfway through it."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json()}}
            for c in reply.tool_calls
        ]
    payload: dict[str, Any] = {
        "id": f"chatcmpl-scripted-{record.index}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": record.model,
        "system_fingerprint": "fp_scripted",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.effective_finish_reason}],
    }
    if reply.include_usage and not cut:
        payload["usage"] = report_usage(record, reply)
    record.status = 200
    send_json(handler, 200, payload, [("x-request-id", f"req_scripted_{record.index}")], cut=cut)


def send_stream(handler: BaseHTTPRequestHandler, record: RecordedRequest, reply: Reply, *, cut: bool) -> None:
    """An SSE stream of chunks ending in ``[DONE]``; `cut` stops before the final chunk and the end of the body."""
    stream_options = (record.body or {}).get("stream_options")
    wants_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    usage = report_usage(record, reply) if wants_usage and reply.include_usage and not cut else None
    events = list(chunks(record, reply, wants_usage=wants_usage, usage=usage))
    if cut:
        # Some content, never the final chunk: the client must notice the stream ended early.
        events = events[: min(max(2, len(events) // 2), len(events) - 1)]
    record.status = 200
    start_chunked(handler, [("x-request-id", f"req_scripted_{record.index}")])
    for event in events:
        write_chunk(handler, b"data: " + json.dumps(event).encode() + b"\n\n")
    if cut:
        handler.close_connection = True  # no terminating chunk: an incomplete chunked body
        return
    write_chunk(handler, b"data: [DONE]\n\n")
    end_chunked(handler)


def chunks(
    record: RecordedRequest, reply: Reply, *, wants_usage: bool, usage: dict[str, Any] | None
) -> Iterator[dict[str, Any]]:
    """``chat.completion.chunk`` objects as OpenAI streams them: role, content words, tool-call deltas, finish,
    then (when asked for and reported) a usage chunk with no choices."""
    base: dict[str, Any] = {
        "id": f"chatcmpl-scripted-{record.index}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": record.model,
        "system_fingerprint": "fp_scripted",
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        event = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if wants_usage:
            event["usage"] = None
        return event

    yield chunk({"role": "assistant", "content": "" if reply.content is not None else None, "refusal": None})
    for piece in split_words(reply.content or ""):
        yield chunk({"content": piece})
    for position, call in enumerate(reply.tool_calls):
        head = {
            "index": position,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        yield chunk({"tool_calls": [head]})
        for piece in split_thirds(call.arguments_json()):
            yield chunk({"tool_calls": [{"index": position, "function": {"arguments": piece}}]})
    yield chunk({}, reply.effective_finish_reason)
    if usage is not None:
        yield {**base, "choices": [], "usage": usage}


def split_words(text: str) -> list[str]:
    """Split after whitespace, keeping it, so the chunks concatenate back to `text` exactly."""
    return [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]


def split_thirds(text: str) -> list[str]:
    """Split tool-call arguments across chunks the way real servers do, so clients must concatenate them."""
    if len(text) < 3:
        return [text]
    step = -(-len(text) // 3)
    return [text[i : i + step] for i in range(0, len(text), step)]
