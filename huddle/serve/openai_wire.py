"""What the Chat Completions and Responses endpoints share: OpenAI's error shape, request parsing, the session a
request continues, admitting its turn, the answer's text as it streams, and the ledger's usage.

A turn that pauses for approvals answers with text (`huddle.serve.approvals.waiting_text`: the calls and how to
reply) and ``finish_reason: "stop"``, the calls under the ``huddle`` extension's ``pending``. The next user message
on that session decides them when it is a plain yes or no (``approve`` / ``yes`` / ``y``, ``deny`` / ``no`` / ``n``
with a reason, optionally naming a call id: `reply_decisions`); anything else is a new message, which cancels the
paused turn.

Both endpoints must answer a mistake before anything runs with a proper status and OpenAI's error body
(``{"error": {"message", "type", "param", "code"}}``), which the openai SDK turns into its typed exceptions
(`NotFoundError`, `ConflictError`, ...). So a turn is admitted, and its first event pulled, before a response is
started: an unknown team, a busy session or a spent per-key budget (raised when the turn starts) is a status, not a
stream that fails at once. The first event is the user's message, written before any model is called, so pulling it
costs the time to first token nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from huddle.agents.approval import AWAITING
from huddle.errors import HuddleError
from huddle.secrets import redact
from huddle.serve.approvals import WAITING, reply_decisions, waiting_text
from huddle.serve.events import TeamEvent
from huddle.serve.hub import Hub, SessionBusy, SessionNotFound, TurnStream, UnknownTeam
from huddle.storage.sessions import SessionStore, Turn
from huddle.usage.ledger import Totals

SESSION_HEADER = "X-Huddle-Session"
RUN_HEADER = "X-Huddle-Run"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""No caching, and no buffering by a proxy in front (nginx honours the second): each chunk leaves as it is written."""

log = logging.getLogger(__name__)

Body = TypeVar("Body", bound=BaseModel)
Role = Literal["system", "developer", "user", "assistant"]


class ApiError(HuddleError):
    """A request the endpoints refuse or a run that failed, with the HTTP status and OpenAI's ``code``/``param``."""

    def __init__(
        self, message: str, *, status: int, code: str | None = None, param: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.param = status, code, param
        if kind is not None:
            self.type = kind


NO_RESULT = ApiError("the run ended without a result", status=500, code="internal_error")

_TYPES = {401: "authentication_error", 402: "insufficient_quota", 403: "permission_error", 429: "insufficient_quota"}


def error_json(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The HTTP status and OpenAI error body for `exc`: a `HuddleError` says what went wrong (its message is meant
    for users, masked here anyway); anything else is a bug, logged on one line and answered without detail."""
    if not isinstance(exc, HuddleError):
        log.error("openai endpoint failed: %s: %s", type(exc).__name__, redact(str(exc)))
        return 500, _error("internal error (see the server log)", "server_error", None, "internal_error")
    status = int(getattr(exc, "status", 400))
    code, param = getattr(exc, "code", None), getattr(exc, "param", None)
    if isinstance(exc, UnknownTeam):
        code, param = "model_not_found", "model"
    elif isinstance(exc, SessionNotFound):
        code = code or "session_not_found"
    elif isinstance(exc, SessionBusy):
        code = "session_busy"
    kind = getattr(exc, "type", None)  # a HuddleError may name OpenAI's error type itself (the per-key budget)
    if not isinstance(kind, str):
        kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return status, _error(redact(str(exc)), kind, param, code)


def _error(message: str, kind: str, param: object, code: object) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(exc: Exception, headers: dict[str, str] | None = None) -> JSONResponse:
    """`exc` as an OpenAI error; `headers` name the session and run when a turn had started."""
    status, body = error_json(exc)
    return JSONResponse(body, status_code=status, headers=headers)


async def parse(request: Request, model: type[Body]) -> Body:
    """The request's JSON body as `model`; a 400 naming the first field that is wrong otherwise."""
    try:
        raw = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError("the request body is not valid JSON", status=400, code="invalid_json") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
        message = f"{where}: {first['msg']}" if where else f"the request body: {first['msg']}"
        raise ApiError(message, status=400, code="invalid_request", param=where or None) from None


class Lenient(BaseModel):
    """A request part: the fields huddle reads are checked, the many OpenAI options it does not use are ignored."""

    model_config = ConfigDict(extra="ignore")


@dataclass(frozen=True)
class Message:
    """One message of a request's conversation, as text."""

    role: Role
    text: str


@dataclass(frozen=True)
class Conversation:
    """What a request asks: the task (the last user message, after any instructions) and the exchange before it
    (user task, assistant answer), by which a stateless client's resent history finds its session."""

    task: str
    previous: tuple[str, str] | None = None
    reply: str = ""
    """The last user message as written (without the instructions): what may approve or deny a paused turn."""

    @classmethod
    def of(cls, messages: list[Message], instructions: str | None, field_name: str) -> Conversation:
        """The conversation of `messages` (`field_name` in errors). System and developer messages, and
        `instructions`, are the client's instructions: they are put before each user message, since a team's
        members keep their own system prompts."""
        if not messages or messages[-1].role != "user":
            raise ApiError(f"{field_name}: the last message must be the user's", status=400, param=field_name)
        notes = [instructions] if instructions else []
        notes += [m.text for m in messages if m.role in ("system", "developer") and m.text]

        def task(text: str) -> str:
            return "\n\n".join([*notes, text])

        if not messages[-1].text.strip():
            raise ApiError(f"{field_name}: the last user message is empty", status=400, param=field_name)
        chat = [m for m in messages[:-1] if m.role in ("user", "assistant")]
        previous = None
        if len(chat) >= 2 and chat[-1].role == "assistant" and chat[-2].role == "user":
            asked = len(chat) - 2  # the turn's task: before any approvals its answer waited on
            while asked >= 2 and chat[asked - 1].role == "assistant" and chat[asked - 1].text.startswith(WAITING):
                asked -= 2
            previous = (task(chat[asked].text), chat[-1].text)
        return cls(task(messages[-1].text), previous, messages[-1].text)


def session_for(hub: Hub, team: str, conversation: Conversation, owner: str | None) -> str | None:
    """The session a stateless client is continuing: the caller's newest session of `team` whose last finished
    turn is the exchange its history ends with; None (a new session) when there is none (a first message)."""
    if conversation.previous is None:
        return None
    with SessionStore(hub.settings.sessions_location) as store:
        candidates = store.continued_by(team, *conversation.previous)
    found = next((sid for sid in candidates if hub.access.owns(sid, owner)), None)
    if found is None and conversation.previous[1].startswith(WAITING):
        return _paused_session(hub, team, conversation.previous[1], owner)
    return found


def _paused_session(hub: Hub, team: str, waiting: str, owner: str | None) -> str | None:
    """The caller's session of `team` paused on the calls a waiting message names (their ids are in it)."""
    for summary in hub.sessions(owner):
        if summary.team == team:
            pending = hub.pending(summary.id)
            if pending and all(f"[call {call.id}]" in waiting for call in pending):
                return summary.id
    return None


def turn_of_response(hub: Hub, response_id: str, owner: str | None, param: str | None) -> tuple[Turn, str]:
    """The turn of a response id (``resp_<run id>``) and its session's team; 404 when there is none the caller may
    see."""
    with SessionStore(hub.settings.sessions_location) as store:
        turn = store.turn_of_run(response_id.removeprefix("resp_")) if response_id.startswith("resp_") else None
        team = store.team_of(turn.session_id) if turn is not None else None
    if turn is None or team is None or not hub.access.owns(turn.session_id, owner):
        raise ApiError(f"no response {response_id!r}", status=404, code="response_not_found", param=param)
    return turn, team


@dataclass
class Admitted:
    """A turn that started: its stream and the first event, already pulled (see the module's docstring)."""

    turn: TurnStream
    first: TeamEvent | None

    async def events(self) -> AsyncIterator[TeamEvent]:
        """Every event of the turn; the turn is closed (saved as cancelled) if the caller stops early."""
        # The hub's events are an async generator (typed as an iterator): closing it ends the turn.
        async with aclosing(self.turn.events) as events:
            if self.first is not None:
                yield self.first
            async for event in events:
                yield event


async def admit(hub: Hub, team: str, conversation: Conversation, session_id: str | None, owner: str | None) -> Admitted:
    """Start a turn and pull its first event, so that what refuses it raises here (`HuddleError`). On a session
    paused for approvals a plain yes or no decides the waiting calls; any other message is a new turn."""
    decisions = reply_decisions(conversation.reply, hub.pending(session_id)) if session_id else None
    if decisions and session_id:
        turn = await hub.approve(team, session_id, decisions, owner)
    else:
        turn = await hub.turn(team, conversation.task, session_id=session_id, owner=owner)
    first = await anext(aiter(turn.events), None)
    return Admitted(turn, first)


def answer_text(result: TeamEvent) -> str:
    """The text a client is answered with: the team's answer, or what waits for approval and how to reply."""
    return result.text or (waiting_text(result.data["pending"]) if _paused(result) else "")


def _paused(result: TeamEvent) -> bool:
    return result.data.get("stop_reason") == AWAITING and bool(result.data.get("pending"))


def failure(result: TeamEvent) -> ApiError | None:
    """The error a run without an answer is answered with: a budget that stopped it is the caller's quota (429),
    anything else the team's failure (502: the models behind it failed, not this server)."""
    if result.text or _paused(result):
        return None
    reason = redact(str(result.data.get("stop_reason") or "error: the team gave no answer"))
    if "budget" in reason:
        return ApiError(reason, status=429, code="budget_exceeded", kind="insufficient_quota")
    return ApiError(reason, status=502, code="run_failed")


@dataclass
class Answer:
    """The answer's text as the client has been sent it: the streamed deltas, then what the result adds.

    A retry restarts the text (``text_reset``); what a client was sent cannot be taken back in these protocols, so
    the reset travels as a huddle event and the retried text follows. A team that streams nothing (the patterns
    answer in one piece) has its whole answer sent when the result comes."""

    sent: str = ""

    def delta(self, event: TeamEvent) -> str:
        """The text of a ``text_delta`` to send."""
        self.sent += event.text
        return event.text

    def reset(self) -> None:
        self.sent = ""

    def rest(self, answer: str) -> str:
        """What of `answer` the client has not been sent (all of it when nothing streamed; nothing when the
        streamed text differs, the complete answer then being in the result)."""
        rest = answer[len(self.sent) :] if answer.startswith(self.sent) else ""
        self.sent += rest
        return rest


def usage(hub: Hub, run_id: str) -> Totals:
    """The run's totals in the ledger: what its calls were billed, not an estimate."""
    return hub.ledger.totals(run_id=run_id)


def sse(data: dict[str, Any], event: str | None = None) -> str:
    """One server-sent event."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


def owner_of(request: Request) -> str | None:
    """The API key the request came with (set by `huddle.serve.keys`), None without keys."""
    return getattr(request.state, "owner", None)


def huddle_events(events: list[TeamEvent]) -> list[dict[str, Any]]:
    """The extension's events of a plain (not streamed) answer: everything but the answer's text and result."""
    return [e.as_json() for e in events if e.kind not in ("text_delta", "result")]
