"""A2A: every served team is an A2A agent, with its agent card and the JSON-RPC methods of the `a2a-sdk` server.

The SDK (``a2a-sdk`` 1.x, A2A protocol 1.0) does the protocol: its JSON-RPC routes, its request handler and its
in-memory task store (tasks live in this process's memory; the conversation itself lives in huddle's session store,
so a restart loses the A2A task records, not the sessions). The v0.3 method names (``message/send``,
``message/stream``, ``tasks/get``, ``tasks/cancel``) are accepted on the same endpoint next to 1.0's (``SendMessage``,
``SendStreamingMessage``, ``GetTask``, ``CancelTask``), because deployed A2A clients still speak 0.3.

What is huddle's is `TeamExecutor`: one message is one turn of the hub on the session named by the A2A
``contextId`` (a message without one starts a new context, hence a new session), run as one A2A task:

- the team's events become ``working`` status updates: speaker, plan, tool calls and members' messages as a status
  message with a text part for people and a data part ``{"huddle": TeamEvent.as_json()}`` for programs; the meter as
  a status update with no message and the same object in its ``metadata`` (so the task's history does not fill up
  with meter readings);
- the answer streams as the ``answer`` artifact while it is written and is replaced by the whole answer at the end;
- the task ends ``completed`` with the answer as its status message (and the `RunResult` as a data part), or
  ``failed`` with the reason; ``tasks/cancel`` cancels the running turn, which the hub saves as cancelled;
- a turn that pauses for approvals leaves its task ``input-required``, its status message the waiting calls as
  text and as a data part ``{"pending": [...]}``; the next message on that task (or context) decides them with a
  data part ``{"decisions": {"<call id>": {"action": "approve" | "deny" | "edit", "reason", "args"}}}`` or the text
  ``approve`` / ``deny <reason>``, and the task goes on to ``completed``; any other message is a new turn, which
  cancels the paused one (its calls never run). Data parts carry numbers as doubles: edited integer arguments
  arrive as ``4.0``;
- a turn the hub refuses (the session is answering, belongs to another API key, or has no budget left, or the
  decisions do not fit) is a JSON-RPC error with the HTTP status it would have had in ``error.data``.

Cards are built per request, so the endpoint URL in them is the one the client reached the server by.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from a2a.extensions.common import HTTP_EXTENSION_HEADER, get_requested_extensions
from a2a.helpers import get_data_parts, new_data_part, new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import ServerCallContextBuilder, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    Part,
    SecurityRequirement,
    SecurityScheme,
    StringList,
    TaskState,
)
from a2a.utils.constants import (
    AGENT_CARD_WELL_KNOWN_PATH,
    PROTOCOL_VERSION_CURRENT,
    VERSION_HEADER,
    TransportProtocol,
)
from a2a.utils.errors import A2AError, InvalidParamsError, UnsupportedOperationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import huddle
from huddle.agents.approval import AWAITING, ApprovalDecision
from huddle.errors import HuddleError
from huddle.serve.approvals import decisions_from, reply_decisions, waiting_text
from huddle.serve.events import TeamEvent
from huddle.serve.hub import Hub, OpenAccess, ServedTeam, UnknownTeam

logger = logging.getLogger(__name__)

OWNER = "huddle_owner"
"""Where the API key's id (set by the keys middleware on ``request.state.owner``) travels in the call context."""
KEY_SCHEME = "huddle_api_key"
ANSWER_ARTIFACT = "answer"
MODES = ["text/plain"]
OUTPUT_MODES = ["text/plain", "application/json"]


def routes(hub: Hub) -> list[BaseRoute]:
    """Each team's JSON-RPC endpoint ``/a2a/{team}`` and card ``/a2a/{team}/.well-known/agent-card.json``, the first
    team's card at ``/.well-known/agent-card.json`` too, and a 404 for a team not served here."""
    logging.getLogger("a2a.server.agent_execution.active_task").addFilter(_drop_refusals)
    found: list[BaseRoute] = []
    for index, served in enumerate(hub.teams.values()):
        path = f"/a2a/{served.name}"
        card = agent_card(served, path, keyed=not isinstance(hub.access, OpenAccess))
        handler = DefaultRequestHandler(
            agent_executor=TeamExecutor(hub, served.name),
            task_store=InMemoryTaskStore(owner_resolver=_owner_of),
            agent_card=card,
        )
        found += create_jsonrpc_routes(handler, path, context_builder=OwnerContextBuilder(), enable_v0_3_compat=True)
        endpoint = _card_endpoint(card, path)
        found.append(Route(path + AGENT_CARD_WELL_KNOWN_PATH, endpoint, methods=["GET"]))
        if index == 0:
            found.append(Route(AGENT_CARD_WELL_KNOWN_PATH, endpoint, methods=["GET"]))
    unknown = _unknown_team(hub)
    found += [
        Route("/a2a/{team}", unknown, methods=["GET", "POST"]),
        Route("/a2a/{team}" + AGENT_CARD_WELL_KNOWN_PATH, unknown, methods=["GET"]),
    ]
    return found


def agent_card(served: ServedTeam, url: str, *, keyed: bool = False) -> AgentCard:
    """The team's card: a skill per member (what the team can do is what its members do), streaming, JSON-RPC at
    `url` (the card route puts the absolute URL in); `keyed` (API keys on) declares the bearer key it needs."""
    skills = [
        AgentSkill(id=m.name, name=m.name, description=m.description, tags=[served.name, "huddle"])
        for m in served.members
    ]
    card = AgentCard(
        name=served.name,
        description=served.description,
        version=huddle.__version__,
        supported_interfaces=[
            AgentInterface(
                url=url, protocol_binding=TransportProtocol.JSONRPC, protocol_version=PROTOCOL_VERSION_CURRENT
            )
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=MODES,
        default_output_modes=OUTPUT_MODES,
        skills=skills,
    )
    if keyed:
        card.security_schemes[KEY_SCHEME].CopyFrom(
            SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="bearer", bearer_format="hud_<id>_<secret>", description="a huddle serve API key"
                )
            )
        )
        card.security_requirements.append(SecurityRequirement(schemes={KEY_SCHEME: StringList()}))
    return card


class OwnerContextBuilder(ServerCallContextBuilder):
    """The call context the SDK hands to the executor and the task store: the API key's id as the owner, and of the
    headers only the protocol version the SDK checks (its default copies every header, ``Authorization`` included,
    into a context that travels far)."""

    def build(self, request: Request) -> ServerCallContext:
        headers = {VERSION_HEADER.lower(): request.headers[VERSION_HEADER]} if VERSION_HEADER in request.headers else {}
        return ServerCallContext(
            state={OWNER: getattr(request.state, "owner", None), "headers": headers},
            requested_extensions=get_requested_extensions(request.headers.getlist(HTTP_EXTENSION_HEADER)),
        )


def _owner_of(context: ServerCallContext) -> str:
    """The task store's scope: tasks are kept per API key, so another key's task is not found."""
    return str(context.state.get(OWNER) or "")


class TeamExecutor(AgentExecutor):
    """Runs one A2A message as one hub turn of `team` on the session named by the message's ``contextId``."""

    def __init__(self, hub: Hub, team: str) -> None:
        self._hub = hub
        self._team = team

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id, context_id = str(context.task_id), str(context.context_id)
        owner = context.call_context.state.get(OWNER)
        try:
            decisions = self._decisions(context, context_id)
            if decisions is not None:
                turn = await self._hub.approve(self._team, context_id, decisions, owner)
            else:
                turn = await self._hub.turn(self._team, context.get_user_input(), session_id=context_id, owner=owner)
        except HuddleError as error:
            raise refusal(error) from None  # before any task: the client gets a JSON-RPC error
        # The stream must be iterated (or closed after starting) once admitted, or its session stays busy: nothing
        # between here and the first event waits (putting the task on the SDK's unbounded queue does not).
        # Closing the stream early (a cancel, a shutdown) saves the turn as cancelled.
        updater = TaskUpdater(event_queue, task_id, context_id)
        async with aclosing(turn.events) as events:
            if context.current_task is None and context.message is not None:
                await event_queue.enqueue_event(
                    new_task(task_id, context_id, TaskState.TASK_STATE_SUBMITTED, history=[context.message])
                )
            try:
                result = await self._publish(updater, events)
            except HuddleError as error:  # e.g. the key's budget ran out before the first call
                await updater.failed(updater.new_agent_message([new_text_part(str(error))]))
                return
            except Exception as error:  # the task must end, and a reason reach the client
                logger.error("a2a turn of team %s failed: %s", self._team, type(error).__name__)
                await updater.failed(updater.new_agent_message([new_text_part("the run failed (internal error)")]))
                return
        # Announced once the stream has ended, i.e. the turn is saved and its session free for the next message.
        await _finish(updater, result)

    def _decisions(self, context: RequestContext, session_id: str) -> dict[str, ApprovalDecision] | None:
        """The approval decisions a message makes: its data part's ``decisions``, or a plain yes or no while calls
        wait on the session; None for a new message."""
        parts = context.message.parts if context.message is not None else []
        for data in get_data_parts(parts):
            if isinstance(data, dict) and "decisions" in data:
                return decisions_from(data["decisions"])
        return reply_decisions(context.get_user_input(), self._hub.pending(session_id))

    async def _publish(self, updater: TaskUpdater, events: AsyncIterator[TeamEvent]) -> TeamEvent | None:
        """Map the turn's events onto the task as ``working`` updates and answer chunks; return the result."""
        streamed_by: str | None = None
        result: TeamEvent | None = None
        async for event in events:
            if event.kind == "result":
                result = event
            elif event.kind in ("text_delta", "text_reset"):
                fresh = event.kind == "text_reset" or event.source != streamed_by
                streamed_by = event.source
                if event.text:
                    await updater.add_artifact(
                        [new_text_part(event.text)], artifact_id=ANSWER_ARTIFACT, name="answer", append=not fresh
                    )
            elif event.kind == "usage":
                await updater.update_status(TaskState.TASK_STATE_WORKING, metadata={"huddle": event.as_json()})
            else:
                message = updater.new_agent_message([new_text_part(describe_event(event)), _huddle_part(event)])
                await updater.update_status(TaskState.TASK_STATE_WORKING, message=message)
        return result

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Mark the task cancelled; the SDK then cancels `execute`, whose closing stream saves the turn as
        cancelled in the session."""
        updater = TaskUpdater(event_queue, str(context.task_id), str(context.context_id))
        await updater.cancel(updater.new_agent_message([new_text_part("cancelled by the client")]))


async def _finish(updater: TaskUpdater, result: TeamEvent | None) -> None:
    """The answer as the task's artifact and final message, ``completed``; a pause for approvals is
    ``input-required`` with the waiting calls; no answer is ``failed`` with the reason the run stopped."""
    if result is None:
        await updater.failed(updater.new_agent_message([new_text_part("the run ended without a result")]))
        return
    pending = result.data.get("pending") or []
    if result.data.get("stop_reason") == AWAITING and pending:
        data = new_data_part({"pending": pending}, media_type="application/json")
        await updater.requires_input(updater.new_agent_message([new_text_part(waiting_text(pending)), data]))
        return
    if result.text:
        answer = [new_text_part(result.text)]
        await updater.add_artifact(answer, artifact_id=ANSWER_ARTIFACT, name="answer", last_chunk=True)
        await updater.complete(updater.new_agent_message([*answer, _huddle_part(result)]))
        return
    reason = str(result.data.get("stop_reason") or "the run gave no answer")
    await updater.failed(updater.new_agent_message([new_text_part(reason), _huddle_part(result)]))


def describe_event(event: TeamEvent) -> str:
    """One line a person can read in an A2A client that shows status messages as text."""
    if event.kind == "speaker":
        why = event.data.get("reason") or event.data.get("policy")
        return f"{event.source} speaks" + (f" ({why})" if why else "")
    if event.kind == "tool_calls":
        calls = ", ".join(str(call.get("tool")) for call in event.data.get("calls", []))
        return f"{event.source} called {calls or 'tools'}"
    if event.kind == "plan":
        return f"{event.source} planned: {event.text}"
    return f"{event.source}: {event.text}"


def _huddle_part(event: TeamEvent) -> Part:
    return new_data_part({"huddle": event.as_json()}, media_type="application/json")


def refusal(error: HuddleError) -> A2AError:
    """The A2A error for a turn the hub refused: not found (another key's session) is invalid params, the others
    (busy, no budget) a failed precondition; ``data.status`` is the HTTP status the OpenAI endpoints would send."""
    status = int(getattr(error, "status", 400))
    kind = InvalidParamsError if status == 404 else UnsupportedOperationError
    return kind(message=str(error), data={"status": str(status), "error": type(error).__name__})


def _drop_refusals(record: logging.LogRecord) -> bool:
    """The SDK logs an executor's exception with its traceback; a refusal is the client's answer, not a crash, so
    its log record is dropped (the client gets the error, and no traceback reaches the log)."""
    return not (record.exc_info and isinstance(record.exc_info[1], A2AError))


def _card_endpoint(card: AgentCard, path: str) -> Any:
    async def endpoint(request: Request) -> Response:
        absolute = AgentCard()
        absolute.CopyFrom(card)
        absolute.supported_interfaces[0].url = str(request.base_url).rstrip("/") + path
        return JSONResponse(agent_card_to_dict(absolute))

    return endpoint


def _unknown_team(hub: Hub) -> Any:
    async def endpoint(request: Request) -> Response:
        try:
            hub.team(request.path_params["team"])
        except UnknownTeam as error:
            body = {"error": {"message": str(error), "type": "not_found", "code": "unknown_team"}}
            return JSONResponse(body, error.status)
        raise AssertionError("a served team's routes come first")  # pragma: no cover

    return endpoint
