"""``ScriptedServer``: a real OpenAI-compatible HTTP server on 127.0.0.1 that answers from a script.

Mocking the ``openai`` client in-process skips exactly the layers that break in production: HTTP keep-alive, SSE
parsing, retries on 429 with ``Retry-After``, timeouts, truncated streams and malformed tool-call JSON. This server
speaks real HTTP/1.1 (standard library only, one thread per connection) so the real ``openai`` client, autogen-ext's
``OpenAIChatCompletionClient`` and huddle's own clients are exercised end to end, deterministically and offline.

Answers come from an ordered list of `Rule` s (first match wins) with a fallback `Reply`; faults can be scripted per
rule or injected at random with a seeded generator, so chaos tests are reproducible. Every request is recorded as a
`RecordedRequest`, with secrets redacted, so tests can assert on what a client actually sent and on the token usage
the server actually reported.

The script's parts live in `huddle.testing.rules` (rules, recorded requests), `replies` and `faults`; the OpenAI
wire format (payloads, SSE chunks, error bodies, usage) in `huddle.testing.wire`. This module is the server: its
lifecycle, the request log, and choosing each answer.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, cast
from urllib.parse import urlsplit

from huddle.models import AGENT_HEADER  # light: the models package itself imports no autogen
from huddle.testing import wire
from huddle.testing.faults import FAULT_KINDS, Fault, FaultKind, fault_template, malformed
from huddle.testing.prompt_cache import PromptCache
from huddle.testing.replies import Reply, ToolCall
from huddle.testing.rules import RecordedRequest, ReplyLike, Rule, coerce_reply_like

# Header names whose values are credentials: recorded requests must never keep them (test logs get shared).
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie"})
_REDACTED = "***"
_JOIN_TIMEOUT_S = 5.0


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

    With ``prompt_cache=True`` the server plays a provider's prompt cache (`huddle.testing.prompt_cache`): a reply
    that scripts no ``cached_tokens`` reports as cached the prefix its request shares with an earlier one.
    """

    def __init__(
        self,
        rules: Sequence[Rule] = (),
        fallback: ReplyLike | str | None = None,
        fault_rate: float = 0.0,
        fault_kinds: Sequence[FaultKind | Fault] = FAULT_KINDS,
        seed: int = 0,
        models: Sequence[str] = ("scripted",),
        prompt_cache: bool = False,
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be within [0, 1], got {fault_rate}")
        if fault_rate > 0 and not fault_kinds:
            raise ValueError("fault_rate > 0 needs at least one fault kind")
        self._rules: list[Rule] = [Rule.model_validate(rule) for rule in rules]
        self._uses: list[int] = [0] * len(self._rules)
        self.fallback: ReplyLike = Reply(content="OK") if fallback is None else coerce_reply_like(fallback)
        self.fault_rate = fault_rate
        self.fault_kinds: tuple[Fault, ...] = tuple(fault_template(kind) for kind in fault_kinds)
        self.seed = seed
        self.models: list[str] = list(models)
        self._rng = random.Random(seed)
        self.prompt_cache: PromptCache | None = PromptCache() if prompt_cache else None
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
        """Forget recorded requests, rule uses and cached prompts, and restart call indexes and the fault generator at
        the seed."""
        if self.prompt_cache is not None:
            self.prompt_cache.clear()
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
            payload = wire.error_body(problem, "invalid_request_error")
        elif handler.command == "GET" and record.path == "/v1/models":
            status, payload = 200, {"object": "list", "data": [wire.model_object(m) for m in self.models]}
        elif handler.command == "GET" and record.path.startswith("/v1/models/") and record.path[11:] in self.models:
            status, payload = 200, wire.model_object(record.path[11:])
        else:
            status = 404
            message = f"Unknown request URL: {handler.command} {record.path}."
            payload = wire.error_body(message, "invalid_request_error", "unknown_url")
        record.status = status
        if status >= 400:
            record.error = payload["error"]["message"]
        wire.send_json(handler, status, payload)

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
                wire.send_error(handler, record, 429 if fault.kind == "rate_limit" else 500, fault)
                return
            if fault.kind == "timeout" and self._stopping.wait(fault.delay_s):
                handler.close_connection = True  # stopped while stalling: hang up without an answer
                return
        try:
            reply = self._resolve(source if source is not None else self.fallback, record)
        except Exception as exc:  # a broken callable is a test bug: say so in the response, don't hang up
            record.error = f"reply callable raised {exc!r}"
            record.status = 500
            wire.send_json(handler, 500, wire.error_body(f"ScriptedServer: {record.error}", "server_error"))
            return
        if fault is not None and fault.kind == "malformed_tool_json":
            reply = malformed(reply)
        reply = self._with_tool_ids(reply)
        if self.prompt_cache is not None:
            cached = self.prompt_cache.read(record)  # every request is remembered, a scripted count or not
            if reply.cached_tokens is None:
                reply = reply.model_copy(update={"cached_tokens": cached})
        record.reply = reply
        if reply.delay_s and self._stopping.wait(reply.delay_s):
            handler.close_connection = True
            return
        cut = fault is not None and fault.kind == "cut_stream"
        if record.stream:
            wire.send_stream(handler, record, reply, cut=cut)
        else:
            wire.send_completion(handler, record, reply, cut=cut)

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
        coerced = coerce_reply_like(produced)
        if not isinstance(coerced, Reply):
            raise TypeError(f"reply callable returned {type(produced).__name__}, expected a Reply")
        return coerced

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


def _shutdown_socket(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the client or the handler
        connection.shutdown(socket.SHUT_RDWR)
