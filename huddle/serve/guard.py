"""The door of ``huddle serve``: API keys and request limits, checked before a request reaches any endpoint.

A pure ASGI middleware rather than Starlette's ``BaseHTTPMiddleware`` (which runs the endpoint in a task and relays
its response through a memory stream): a streamed answer's chunks go straight to the client as they are written, and
the client's disconnect straight to the endpoint. Only the request *body* is read up front (it is at most
`Limits.max_body_bytes`, and the message count needs it whole); the response passes through untouched.

With keys on, every request needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, except the health checks
the web page's own files and the A2A agent cards (`OPEN_PATHS`, `OPEN_PREFIXES`, `OPEN_SUFFIX`), which hold nothing
of anyone's (a card says which key scheme the agent needs: A2A clients read it before they have a key), and CORS
preflights, which browsers send without credentials. The key's id becomes ``request.state.owner`` (None with keys
off); the key itself is taken out of the headers the endpoints see, so nothing past this point can log or echo it.

Every refusal is JSON in OpenAI's error shape (``{"error": {"message", "type", "param", "code"}}``), which OpenAI
clients turn into their usual exceptions and other clients can read as well.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

OPEN_PATHS = frozenset({"/", "/healthz", "/readyz"})
OPEN_PREFIXES = ("/static/",)
OPEN_SUFFIX = "/.well-known/agent-card.json"
KEY_HEADERS = (b"authorization", b"x-api-key")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# The request fields that carry a conversation: Chat Completions' and AG-UI's ``messages``, the Responses API's
# ``input`` (a string, or a list of items).
_MESSAGE_FIELDS = ("messages", "input")

Verify = Callable[[str], str | None]
"""A presented key → its id, or None for a key that is unknown, malformed or revoked."""


@dataclass(frozen=True)
class Limits:
    """What one request may carry. A megabyte holds a long conversation many times over; a larger body is a mistake
    or an attack, and is refused before it is read. 200 messages is past any chat a person has, and bounds the work
    (and the prompt) a stateless client can ask for in one request."""

    max_body_bytes: int = 1 << 20
    max_messages: int = 200


DEFAULT_LIMITS = Limits()


class Guard:
    """The ASGI middleware: `verify` checks keys (None: keys off, every caller is let in as owner None)."""

    def __init__(self, app: ASGIApp, verify: Verify | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        self.app = app
        self.verify = verify
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        owner: str | None = None
        if self.verify is not None and not _open(scope, headers):
            key = presented_key(headers)
            owner = self.verify(key) if key is not None else None
            if owner is None:
                why = "is not valid (unknown or revoked)" if key is not None else "is missing"
                await _refuse(
                    send,
                    401,
                    f"the API key {why}: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
                    "(keys come from `huddle serve keys add NAME`)",
                    code="invalid_api_key",
                    extra_headers=[(b"www-authenticate", b'Bearer realm="huddle"')],
                )
                return
        scope = {
            **scope,
            "headers": [(name, value) for name, value in headers if name not in KEY_HEADERS],
            "state": {**scope.get("state", {}), "owner": owner},
        }
        if scope["method"] in _BODY_METHODS:
            replay = await self._read_body(scope, receive, send)
            if replay is None:
                return
            receive = replay
        await self.app(scope, receive, send)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """The body, read whole and checked, as a `receive` that hands it to the endpoint and then the client's
        later messages (a disconnect, which a streamed answer watches for); None when the request was refused or
        the client left."""
        limit = self.limits.max_body_bytes
        declared = _header(scope["headers"], b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away before sending it all
                return None
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send, limit)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = self._too_many_messages(body)
        if problem is not None:
            await _refuse(send, 400, problem[1], code="too_many_messages", param=problem[0])
            return None
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    def _too_many_messages(self, body: bytes) -> tuple[str, str] | None:
        """(field, message) when a JSON body's conversation has more than `Limits.max_messages` items. A body that is
        not JSON is left to the endpoint, which says what it expected."""
        if not any(f'"{name}"'.encode() in body for name in _MESSAGE_FIELDS):
            return None
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        if not isinstance(parsed, dict):
            return None
        most = self.limits.max_messages
        for name in _MESSAGE_FIELDS:
            items = parsed.get(name)
            if isinstance(items, list) and len(items) > most:
                return name, (
                    f"'{name}' has {len(items)} items; at most {most} are accepted in one request: continue the "
                    "conversation as a session (X-Huddle-Session or previous_response_id) instead of resending it"
                )
        return None


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key a request carries: a bearer token in ``Authorization``, else ``X-API-Key``."""
    authorization = _header(headers, b"authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = (_header(headers, b"x-api-key") or "").strip()
    return key or None


def _open(scope: Scope, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request needs no key: the health checks, the page and its files, agent cards, CORS preflights."""
    path: str = scope["path"]
    if (
        path in OPEN_PATHS
        or path.startswith(OPEN_PREFIXES)
        or (scope["method"] == "GET" and path.endswith(OPEN_SUFFIX))
    ):
        return True
    return scope["method"] == "OPTIONS" and _header(headers, b"access-control-request-method") is not None


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


async def _too_large(send: Send, limit: int) -> None:
    await _refuse(
        send, 413, f"the request body is over {limit} bytes, the most one request may carry", code="body_too_large"
    )


async def _refuse(
    send: Send,
    status: int,
    message: str,
    *,
    code: str,
    param: str | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer `status` with an OpenAI-shaped error body (type ``invalid_request_error``, as OpenAI's own 400/401)."""
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body})
