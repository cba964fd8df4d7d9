"""``ScriptedServer``: a real OpenAI-compatible HTTP server on 127.0.0.1 that answers from a script.

Mocking the ``openai`` client in-process skips exactly the layers that break in production: HTTP keep-alive, SSE
parsing, retries on 429 with ``Retry-After``, timeouts, truncated streams and malformed tool-call JSON. This server
speaks real HTTP/1.1 (standard library only, one thread per connection) so the real ``openai`` client, autogen-ext's
``OpenAIChatCompletionClient`` and huddle's own clients are exercised end to end, deterministically and offline.

Answers come from an ordered list of `Rule` s (first match wins) with a fallback `Reply`; faults can be scripted per
rule or injected at random with a seeded generator, so chaos tests are reproducible. Every request is recorded as a
`RecordedRequest`, with secrets redacted, so tests can assert on what a client actually sent and on the token usage
the server actually reported.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Literal, TypeAlias, cast, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator

from huddle.models import AGENT_HEADER  # light: the models package itself imports no autogen
from huddle.models.tokens import count_text

__all__ = [
    "AGENT_HEADER",
    "FAULT_KINDS",
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "Reply",
    "ReplyLike",
    "Rule",
    "ScriptedServer",
    "ToolCall",
]

FaultKind: TypeAlias = Literal["rate_limit", "server_error", "timeout", "cut_stream", "malformed_tool_json"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

# Header names whose values are credentials: recorded requests must never keep them (test logs get shared).
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie"})
_REDACTED = "***"
# A proper prefix of a JSON object is never valid JSON; this one reads like a real truncation.
_MALFORMED_ARGUMENTS = '{"order_id": "10'
_UNKNOWN_TOOL = "unknown_tool"
_JOIN_TIMEOUT_S = 5.0


class ToolCall(BaseModel):
    """One function call the scripted model asks for."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    """A dict is sent as JSON; a str is sent verbatim, so tests can script malformed JSON on purpose."""
    id: str | None = None
    """None: the server generates ``call_<n>``, unique for the server's lifetime."""

    def arguments_json(self) -> str:
        """The ``function.arguments`` string as sent on the wire."""
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


class Reply(BaseModel):
    """What the scripted model answers: content and/or tool calls, with the usage to report."""

    model_config = ConfigDict(extra="forbid")

    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: tuple[NonNegativeInt, NonNegativeInt] | None = None
    """(prompt, completion) tokens to report; None: count them with tiktoken (deterministic)."""
    include_usage: bool = True
    """False omits ``usage`` entirely (also from streams), so clients must fall back to estimating."""
    finish_reason: str | None = None
    """None: ``tool_calls`` when the reply has tool calls, else ``stop``."""
    delay_s: float = Field(default=0.0, ge=0.0)
    """Seconds to wait before answering, e.g. to prove that requests run concurrently."""

    @property
    def effective_finish_reason(self) -> str:
        """The finish_reason sent on the wire."""
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"


class Fault(BaseModel):
    """A failure to inject instead of (or around) a reply, to test a client's error handling."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    retry_after: float = Field(default=1.0, ge=0.0)
    """rate_limit: seconds sent in ``Retry-After`` (and ``retry-after-ms``)."""
    delay_s: float = Field(default=30.0, ge=0.0)
    """timeout: seconds to stall before answering; give the client a shorter timeout. ``stop()`` cuts it short."""


class RecordedRequest(BaseModel):
    """One HTTP request the server received and how it answered; credentials are redacted."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    """Lower-cased names; credential headers (``authorization``, ...) hold ``***``."""
    agent: str | None = None
    """The ``X-Huddle-Agent`` header, if any."""
    stream: bool = False
    index: int = -1
    """0-based index among chat-completion requests; -1 for anything else (models list, 404, invalid JSON)."""
    status: int = 0
    """HTTP status sent; 0 while not (or never) answered, e.g. a timeout fault cut short by ``stop()``."""
    fault: str | None = None
    usage: tuple[int, int] | None = None
    """(prompt, completion) usage the server reported; None when it reported none."""
    reply: Reply | None = None
    """The reply sent (or partly sent), with generated tool-call ids filled in."""
    rule: int | None = None
    """Position in ``ScriptedServer.rules`` of the rule that answered; None for the fallback."""
    error: str | None = None
    """Why the server answered with an error of its own (e.g. a reply callable raised)."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's ``messages`` (empty for non-chat requests)."""
        messages = (self.body or {}).get("messages")
        return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []

    @property
    def system_text(self) -> str:
        """All system (and ``developer``) messages' text, newline-joined: what `Rule.system` searches."""
        return "\n".join(_text_of(m.get("content")) for m in self.messages if m.get("role") in ("system", "developer"))

    @property
    def last_role(self) -> str | None:
        """Role of the last message (``tool`` right after a tool result)."""
        return str(self.messages[-1].get("role")) if self.messages else None

    @property
    def last_text(self) -> str:
        """Text of the last message (for a tool result, its content): what `Rule.last` searches."""
        return _text_of(self.messages[-1].get("content")) if self.messages else ""

    @property
    def model(self) -> str:
        """The requested model name (``scripted`` if the request named none)."""
        model = (self.body or {}).get("model")
        return model if isinstance(model, str) and model else "scripted"

    @property
    def has_tools(self) -> bool:
        """Whether the request offered tools."""
        return bool((self.body or {}).get("tools"))

    @property
    def response_format(self) -> dict[str, Any] | None:
        """The request's ``response_format`` (json_object / json_schema), if any; replies are sent as scripted."""
        value = (self.body or {}).get("response_format")
        return value if isinstance(value, dict) else None


ReplyLike: TypeAlias = Reply | Callable[[RecordedRequest], Reply]
"""A fixed reply, or a function computing one from the request (dynamic replies)."""


class Rule(BaseModel):
    """When a chat-completion request matches all given conditions, answer with `reply` (and/or `fault`).

    Conditions left as None are not checked. ``system`` and ``last`` are regular expressions (``re.search``).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    system: str | None = None
    last: str | None = None
    agent: str | None = None
    call_index: int | None = Field(default=None, ge=0)
    has_tools: bool | None = None
    last_role: str | None = None
    reply: ReplyLike | list[ReplyLike] | None = None
    """A list gives successive matches successive replies (the last repeats); None uses the server's fallback."""
    fault: Fault | None = None
    times: int | None = Field(default=None, ge=1)
    """Stop matching after this many uses (e.g. a 429 once, then let the next rule answer the retry)."""

    @field_validator("system", "last")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        """Fail when the script is written, not with a confusing error in a server thread later."""
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
        return value

    @field_validator("reply", mode="before")
    @classmethod
    def _coerce_reply(cls, value: Any) -> Any:
        """Accept a bare string as shorthand for ``Reply(content=...)``; refuse an empty list (it could never reply)."""
        if isinstance(value, str):
            return Reply(content=value)
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("reply list must not be empty")
            return [Reply(content=item) if isinstance(item, str) else item for item in value]
        return value

    def matches(self, request: RecordedRequest) -> bool:
        """Whether every given condition holds for `request` (``times`` is checked by the server)."""
        if self.call_index is not None and request.index != self.call_index:
            return False
        if self.agent is not None and request.agent != self.agent:
            return False
        if self.has_tools is not None and request.has_tools != self.has_tools:
            return False
        if self.last_role is not None and request.last_role != self.last_role:
            return False
        if self.system is not None and re.search(self.system, request.system_text) is None:
            return False
        return self.last is None or re.search(self.last, request.last_text) is not None

    def reply_for(self, use: int) -> ReplyLike | None:
        """The reply for this rule's `use`-th match (0-based); the last of a list repeats."""
        if isinstance(self.reply, list):
            return self.reply[min(use, len(self.reply) - 1)]
        return self.reply


def _text_of(content: Any) -> str:
    """Plain text of a message ``content``: a string, or the text parts of a multimodal list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return json.dumps(content, sort_keys=True)


def _coerce_reply_like(value: Any) -> ReplyLike:
    """A `Reply` (or callable) from what a user may pass: Reply, str, dict or callable."""
    if isinstance(value, Reply):
        return value
    if isinstance(value, str):
        return Reply(content=value)
    if isinstance(value, dict):
        return Reply.model_validate(value)
    if callable(value):
        return cast(Callable[[RecordedRequest], Reply], value)
    raise TypeError(f"expected a Reply, str, dict or callable, got {type(value).__name__}")


def _fault_template(value: Any) -> Fault:
    if isinstance(value, Fault):
        return value
    if value not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {value!r}; expected one of {', '.join(FAULT_KINDS)}")
    return Fault(kind=value)


def _error_body(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error object, so the client's error classes and messages look like production."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _split_words(text: str) -> list[str]:
    """Split after whitespace, keeping it, so the chunks concatenate back to `text` exactly."""
    return [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]


def _split_thirds(text: str) -> list[str]:
    """Split tool-call arguments across chunks the way real servers do, so clients must concatenate them."""
    if len(text) < 3:
        return [text]
    step = -(-len(text) // 3)
    return [text[i : i + step] for i in range(0, len(text), step)]


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer bound to 127.0.0.1 on a free port, quiet about clients that hang up."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, scripted: ScriptedServer) -> None:
        self.scripted = scripted
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall in sandboxes.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up (timeouts, cut streams, stop()) is expected here; real bugs still print.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Per-connection HTTP/1.1 handler; all logic lives in `ScriptedServer` so state stays in one place."""

    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects from OpenAI
    server_version = "huddle-scripted/1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid ~40 ms delayed-ACK stalls

    @property
    def scripted(self) -> ScriptedServer:
        return cast(_HTTPServer, self.server).scripted

    def setup(self) -> None:
        super().setup()
        self.scripted._register(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.scripted._unregister(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest output should show the test's failures, not an access log."""

    def _dispatch(self) -> None:
        try:
            self.scripted._handle(self)
        except OSError:  # the client hung up (or stop() shut the socket): nothing left to answer
            self.close_connection = True

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_PATCH = _dispatch
    do_DELETE = _dispatch

    def read_body(self) -> bytes:
        """The request body, by Content-Length or chunked transfer-encoding (read fully to keep the connection)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send_json(self, status: int, payload: Any, headers: Sequence[tuple[str, str]] = ()) -> None:
        """A complete JSON response with Content-Length, so the keep-alive connection stays usable."""
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self, headers: Sequence[tuple[str, str]] = ()) -> None:
        """Start an SSE response with chunked transfer-encoding: a missing final chunk is then a detectable error."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class ScriptedServer:
    """An OpenAI-compatible HTTP server on 127.0.0.1 answering chat completions from `rules`.

    Use it as a context manager (or ``start()`` / ``stop()``) and point any OpenAI client at ``base_url``::

        with ScriptedServer([Rule(last="hello", reply=Reply(content="hi"))]) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
            ...
            assert server.requests[0].agent == "planner"

    Random faults (``fault_rate``) are drawn from ``random.Random(seed)``, once per chat-completion request, so a
    sequential test sees the same faults on every run. A random fault does not use up the matched rule, so a client
    that retries gets the reply it would have got; a fault scripted on a rule does use it up.
    """

    def __init__(
        self,
        rules: Sequence[Rule] = (),
        fallback: ReplyLike | str | None = None,
        fault_rate: float = 0.0,
        fault_kinds: Sequence[FaultKind | Fault] = FAULT_KINDS,
        seed: int = 0,
        models: Sequence[str] = ("scripted",),
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be within [0, 1], got {fault_rate}")
        if fault_rate > 0 and not fault_kinds:
            raise ValueError("fault_rate > 0 needs at least one fault kind")
        self._rules: list[Rule] = [Rule.model_validate(rule) for rule in rules]
        self._uses: list[int] = [0] * len(self._rules)
        self.fallback: ReplyLike = Reply(content="OK") if fallback is None else _coerce_reply_like(fallback)
        self.fault_rate = fault_rate
        self.fault_kinds: tuple[Fault, ...] = tuple(_fault_template(kind) for kind in fault_kinds)
        self.seed = seed
        self.models: list[str] = list(models)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._calls = 0
        self._tool_ids = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._handler_threads: set[threading.Thread] = set()

    # ----------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> ScriptedServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("ScriptedServer is already running")
        self._stopping = threading.Event()
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ScriptedServer:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and wake stalled handlers; idempotent, returns promptly."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()  # wakes handlers sleeping in a delay or timeout fault
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
            handlers = list(self._handler_threads)
        for connection in connections:  # wakes handlers blocked reading an idle keep-alive connection
            _shutdown_socket(connection)
        httpd.server_close()
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        for worker in [thread, *handlers]:
            if worker is not None and worker is not threading.current_thread():
                worker.join(max(0.0, deadline - time.monotonic()))
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._httpd is not None else "stopped"
        return f"<ScriptedServer {where} rules={len(self._rules)} requests={len(self._requests)}>"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("ScriptedServer is not running; use it as a context manager or call start()")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, as OpenAI clients expect for ``base_url``."""
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------------------------------------- script & record

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules, in matching order (`RecordedRequest.rule` indexes this)."""
        with self._lock:
            return tuple(self._rules)

    def add_rule(self, rule: Rule) -> None:
        """Append a rule (matched after the existing ones); safe while requests are being served."""
        validated = Rule.model_validate(rule)
        with self._lock:
            self._rules.append(validated)
            self._uses.append(0)

    def uses(self, rule: int) -> int:
        """How many requests rule number `rule` has answered since the last `reset()`."""
        with self._lock:
            return self._uses[rule]

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """Snapshot of the chat-completion requests only (``index`` 0, 1, 2, ...)."""
        return [r for r in self.requests if r.index >= 0]

    def reset(self) -> None:
        """Forget recorded requests and rule uses, and restart call indexes and the fault generator at the seed."""
        with self._lock:
            self._requests.clear()
            self._uses = [0] * len(self._rules)
            self._calls = 0
            self._rng = random.Random(self.seed)

    # ---------------------------------------------------------------------------------------- handler plumbing

    def _register(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)
            self._handler_threads.add(threading.current_thread())
        if self._stopping.is_set():  # accepted while stop() was running: do not outlive it
            _shutdown_socket(connection)

    def _unregister(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)
            self._handler_threads.discard(threading.current_thread())

    def _handle(self, handler: _Handler) -> None:
        raw = handler.read_body()
        path = urlsplit(handler.path).path.rstrip("/") or "/"
        headers: dict[str, str] = {}
        for name, value in handler.headers.items():
            key = name.lower()
            value = _REDACTED if key in _SECRET_HEADERS else value
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        record = RecordedRequest(
            method=handler.command, path=path, headers=headers, agent=handler.headers.get(AGENT_HEADER)
        )
        body: Any = None
        invalid_json = False
        if raw:
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                invalid_json = True
        if isinstance(body, dict):
            record.body = body
            record.stream = body.get("stream") is True
        is_chat = handler.command == "POST" and path == "/v1/chat/completions"
        if not is_chat or invalid_json or not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            with self._lock:
                self._requests.append(record)
            self._answer_other(handler, record, is_chat=is_chat, invalid_json=invalid_json)
            return
        self._answer_chat(handler, record)

    def _answer_other(self, handler: _Handler, record: RecordedRequest, *, is_chat: bool, invalid_json: bool) -> None:
        """Everything that is not a well-formed chat completion: the models list, 400s and 404s."""
        status: int
        payload: dict[str, Any]
        if is_chat:
            status = 400
            problem = "We could not parse the JSON body of your request." if invalid_json else "'messages' is required."
            payload = _error_body(problem, "invalid_request_error")
        elif handler.command == "GET" and record.path == "/v1/models":
            status, payload = 200, {"object": "list", "data": [self._model_object(m) for m in self.models]}
        elif handler.command == "GET" and record.path.startswith("/v1/models/") and record.path[11:] in self.models:
            status, payload = 200, self._model_object(record.path[11:])
        else:
            status = 404
            message = f"Unknown request URL: {handler.command} {record.path}."
            payload = _error_body(message, "invalid_request_error", "unknown_url")
        record.status = status
        if status >= 400:
            record.error = payload["error"]["message"]
        handler.send_json(status, payload)

    @staticmethod
    def _model_object(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 0, "owned_by": "huddle-scripted"}

    def _answer_chat(self, handler: _Handler, record: RecordedRequest) -> None:
        with self._lock:
            record.index = self._calls
            self._calls += 1
            self._requests.append(record)
            # Always draw once per call, so the fault sequence depends only on the number of calls.
            random_fault = (
                self.fault_kinds[self._rng.randrange(len(self.fault_kinds))]
                if (self._rng.random() < self.fault_rate and self.fault_kinds)
                else None
            )
            matched = self._match(record)
            fault: Fault | None = random_fault
            source: ReplyLike | None = None
            if matched is not None:
                position, rule = matched
                use = self._uses[position]
                source = rule.reply_for(use)
                record.rule = position
                if rule.fault is not None:
                    fault = rule.fault
                if rule.fault is not None or random_fault is None:
                    self._uses[position] = use + 1  # a random fault leaves the rule for the retry
        if fault is not None:
            record.fault = fault.kind
            if fault.kind in ("rate_limit", "server_error"):  # before resolving: a reply callable is not called
                self._send_error(handler, record, 429 if fault.kind == "rate_limit" else 500, fault)
                return
            if fault.kind == "timeout" and self._stopping.wait(fault.delay_s):
                handler.close_connection = True  # stopped while stalling: hang up without an answer
                return
        try:
            reply = self._resolve(source if source is not None else self.fallback, record)
        except Exception as exc:  # a broken callable is a test bug: say so in the response, don't hang up
            record.error = f"reply callable raised {exc!r}"
            record.status = 500
            handler.send_json(500, _error_body(f"ScriptedServer: {record.error}", "server_error"))
            return
        if fault is not None and fault.kind == "malformed_tool_json":
            reply = self._malformed(reply)
        reply = self._with_tool_ids(reply)
        record.reply = reply
        if reply.delay_s and self._stopping.wait(reply.delay_s):
            handler.close_connection = True
            return
        cut = fault is not None and fault.kind == "cut_stream"
        if record.stream:
            self._send_stream(handler, record, reply, cut=cut)
        else:
            self._send_completion(handler, record, reply, cut=cut)

    def _match(self, record: RecordedRequest) -> tuple[int, Rule] | None:
        """First rule (in order) that matches and is not used up. Caller holds the lock."""
        for position, rule in enumerate(self._rules):
            if rule.times is not None and self._uses[position] >= rule.times:
                continue
            if rule.matches(record):
                return position, rule
        return None

    @staticmethod
    def _resolve(source: ReplyLike, record: RecordedRequest) -> Reply:
        if isinstance(source, Reply):
            return source
        produced: Any = source(record)
        if isinstance(produced, Reply):
            return produced
        coerced = _coerce_reply_like(produced)
        if not isinstance(coerced, Reply):
            raise TypeError(f"reply callable returned {type(produced).__name__}, expected a Reply")
        return coerced

    @staticmethod
    def _malformed(reply: Reply) -> Reply:
        """The reply's first tool call (or ``unknown_tool``) with arguments cut mid-JSON, as a flaky model sends."""
        name, arguments, call_id = _UNKNOWN_TOOL, _MALFORMED_ARGUMENTS, None
        if reply.tool_calls:
            first = reply.tool_calls[0]
            name, call_id = first.name, first.id
            if isinstance(first.arguments, dict):
                text = json.dumps(first.arguments)
                arguments = text[: max(1, len(text) // 2)]  # a proper prefix of an object: never valid JSON
        return Reply(
            content=None,
            tool_calls=[ToolCall(name=name, arguments=arguments, id=call_id)],
            usage=reply.usage,
            include_usage=reply.include_usage,
            finish_reason="tool_calls",
            delay_s=reply.delay_s,
        )

    def _with_tool_ids(self, reply: Reply) -> Reply:
        if all(call.id is not None for call in reply.tool_calls):
            return reply
        calls: list[ToolCall] = []
        with self._lock:
            for call in reply.tool_calls:
                if call.id is None:
                    call = call.model_copy(update={"id": f"call_{self._tool_ids}"})
                    self._tool_ids += 1
                calls.append(call)
        return reply.model_copy(update={"tool_calls": calls})

    @staticmethod
    def _usage(record: RecordedRequest, reply: Reply) -> tuple[int, int]:
        """Scripted usage, else tiktoken counts: every message's text and tool calls plus the tools offered (prompt);
        the content plus each tool call's name and arguments (completion)."""
        if reply.usage is not None:
            return reply.usage
        prompt_parts: list[str] = []
        for message in record.messages:
            prompt_parts.append(_text_of(message.get("content")))
            for call in message.get("tool_calls") or []:
                function = (call.get("function") or {}) if isinstance(call, dict) else {}
                prompt_parts.append(f"{function.get('name', '')}{function.get('arguments', '')}")
        tools = (record.body or {}).get("tools")
        if tools:
            prompt_parts.append(json.dumps(tools, sort_keys=True))
        completion_parts = [reply.content or ""]
        completion_parts += [f"{call.name}{call.arguments_json()}" for call in reply.tool_calls]
        return count_text("\n".join(prompt_parts), record.model), count_text("\n".join(completion_parts), record.model)

    @staticmethod
    def _usage_json(usage: tuple[int, int]) -> dict[str, int]:
        return {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": usage[0] + usage[1]}

    def _send_error(self, handler: _Handler, record: RecordedRequest, status: int, fault: Fault) -> None:
        headers: list[tuple[str, str]] = []
        if status == 429:
            message = "Rate limit reached for requests (scripted). Please try again later."
            payload = _error_body(message, "requests", "rate_limit_exceeded")
            headers = [
                ("Retry-After", f"{fault.retry_after:g}"),
                ("retry-after-ms", str(round(fault.retry_after * 1000))),
            ]
        else:
            message = "The server had an error while processing your request (scripted)."
            payload = _error_body(message, "server_error")
        record.status = status
        record.error = message
        handler.send_json(status, payload, [*headers, ("x-request-id", f"req_scripted_{record.index}")])

    def _send_completion(self, handler: _Handler, record: RecordedRequest, reply: Reply, *, cut: bool) -> None:
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
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.effective_finish_reason}
            ],
        }
        if reply.include_usage and not cut:
            usage = self._usage(record, reply)
            payload["usage"] = self._usage_json(usage)
            record.usage = usage
        record.status = 200
        if not cut:
            handler.send_json(200, payload, [("x-request-id", f"req_scripted_{record.index}")])
            return
        data = json.dumps(payload).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))  # promise the whole body, then hang up halfway
        handler.end_headers()
        handler.wfile.write(data[: len(data) // 2])
        handler.close_connection = True

    def _send_stream(self, handler: _Handler, record: RecordedRequest, reply: Reply, *, cut: bool) -> None:
        stream_options = (record.body or {}).get("stream_options")
        wants_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        report_usage = wants_usage and reply.include_usage and not cut
        usage = self._usage(record, reply) if report_usage else None
        events = list(self._chunks(record, reply, wants_usage=wants_usage, usage=usage))
        if cut:
            # Some content, never the final chunk: the client must notice the stream ended early.
            events = events[: min(max(2, len(events) // 2), len(events) - 1)]
        record.usage = usage
        record.status = 200
        handler.start_chunked([("x-request-id", f"req_scripted_{record.index}")])
        for event in events:
            handler.write_chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
        if cut:
            handler.close_connection = True  # no terminating chunk: an incomplete chunked body
            return
        handler.write_chunk(b"data: [DONE]\n\n")
        handler.end_chunked()

    @staticmethod
    def _chunks(
        record: RecordedRequest, reply: Reply, *, wants_usage: bool, usage: tuple[int, int] | None
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
        for piece in _split_words(reply.content or ""):
            yield chunk({"content": piece})
        for position, call in enumerate(reply.tool_calls):
            head = {
                "index": position,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            yield chunk({"tool_calls": [head]})
            for piece in _split_thirds(call.arguments_json()):
                yield chunk({"tool_calls": [{"index": position, "function": {"arguments": piece}}]})
        yield chunk({}, reply.effective_finish_reason)
        if usage is not None:
            yield {**base, "choices": [], "usage": ScriptedServer._usage_json(usage)}


def _shutdown_socket(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the client or the handler
        connection.shutdown(socket.SHUT_RDWR)
