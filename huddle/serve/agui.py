"""AG-UI (https://docs.ag-ui.com): ``POST /agui/{team}`` runs one turn and streams it as AG-UI events over SSE.

The body is AG-UI's ``RunAgentInput``: ``threadId`` is the huddle session (a new id starts one), the last user
message is the task (the session store, not the client, holds the conversation, so earlier messages are not
re-read), and ``state``, ``tools``, ``context`` and ``forwardedProps`` are accepted and ignored: a team runs its own
tools. The stream is built from the hub's `TeamEvent` s:

- ``RUN_STARTED`` (the session as ``threadId``, the hub's run id as ``runId``, the client's own run id in
  ``metadata.client_run_id``), then ``STATE_SNAPSHOT`` of ``{plan: {steps}, meter: {calls, prompt_tokens,
  completion_tokens, cost_usd, max_usd}, speaker, decisions: [{speaker, policy, reason}]}``; a new plan is another
  snapshot, every other change a ``STATE_DELTA`` (RFC 6902 JSON Patch against the state last sent).
- Each member's message: ``CUSTOM huddle.speaker`` ``{name, policy, reason}`` just before ``TEXT_MESSAGE_START``
  (``role: assistant``, ``name`` the member), the text as ``TEXT_MESSAGE_CONTENT`` deltas as it is streamed, then
  ``TEXT_MESSAGE_END``. A model retry restarting the text is ``CUSTOM huddle.text_reset`` ``{messageId}``: the
  client drops what it has of that message and the deltas start again. Internal notes and the user's own message
  are not text messages.
- A tool executor's calls: ``huddle.speaker``, then per call ``TOOL_CALL_START`` / ``TOOL_CALL_ARGS`` (the
  arguments as JSON) / ``TOOL_CALL_END`` / ``TOOL_CALL_RESULT`` (the executor's report line for that call).
- Every `TeamEvent` also as ``CUSTOM huddle.event`` (its ``as_json()``), before what it maps to.
- ``RUN_FINISHED`` with ``result: {answer, stop_reason, run_id, session_id}``, or ``RUN_ERROR`` (``message``,
  ``code``: ``run_failed``, ``no_answer``, ``error``) for a run that gave no answer.
- A run that pauses for approvals: each waiting call as ``TOOL_CALL_START`` / ``ARGS`` / ``END`` with no result (its
  ``toolCallId`` the pending call's id), then ``RUN_FINISHED`` with AG-UI 1.0's interrupt outcome, one interrupt per
  call (``id`` = ``toolCallId`` = the call's id, ``reason: "approval"``, ``metadata: {tool, args, agent, step_id,
  why}``) and ``result.pending``. The next run on the thread answers them in ``resume``: per interrupt ``status:
  "resolved"`` with ``payload: {action: "approve" | "deny" | "edit", reason, args}`` (``editedArgs`` is read as
  ``args``), or ``"cancelled"`` (a denial); its stream is the rest of the paused turn (the approved calls' results,
  the answer). Messages are not read on such a run.

A turn that cannot start is an HTTP error before any stream, with a JSON body: 400 for a bad body, 404 for an
unknown team or a session that is not the caller's, 409 while the session answers another message, 422 for resume
entries that do not fit the waiting calls.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from ag_ui.core import (
    BaseEvent,
    CustomEvent,
    Interrupt,
    ResumeEntry,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunStartedEvent,
    StateDeltaEvent,
    StateSnapshotEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    UserMessage,
)
from ag_ui.encoder import EventEncoder
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from huddle.agents.approval import AWAITING, ApprovalDecision
from huddle.errors import HuddleError
from huddle.secrets import redact
from huddle.serve.approvals import decisions_from
from huddle.serve.events import TeamEvent
from huddle.serve.hub import Hub, TurnStream
from huddle.serve.web_api import error_response, owner_of

logger = logging.getLogger("huddle.serve")

_METER_FIELDS = ("calls", "prompt_tokens", "completion_tokens", "cost_usd", "max_usd")
# Where each call's line starts in a tool executor's report ("Step 2: calculator(...) -> 391", "Request: ...").
_REPORT_LINE = re.compile(r"^(?:Step \d+|Request): ", re.MULTILINE)
# How the executor reports a call it did not run because it waits for approval.
_WAITS = f'"error": "{AWAITING}"'


def routes(hub: Hub) -> list[BaseRoute]:
    async def run_agent(request: Request) -> Response:
        try:
            run_input = RunAgentInput.model_validate(await request.json())
        except ValueError as exc:  # not JSON, or not a RunAgentInput (pydantic's ValidationError is a ValueError)
            return error_response(400, f"the body is not an AG-UI RunAgentInput: {_first_error(exc)}", "invalid")
        task = _task(run_input)
        if not task and not run_input.resume:
            return error_response(400, "messages has no user message with text: nothing to answer", "invalid")
        team, owner = request.path_params["team"], owner_of(request)
        try:
            if run_input.resume:
                decisions = resume_decisions(run_input.resume)
                stream = await hub.approve(team, run_input.thread_id, decisions, owner)
            else:
                stream = await hub.turn(team, task, session_id=run_input.thread_id, owner=owner)
        except HuddleError as exc:
            status = getattr(exc, "status", 400)
            return error_response(status, redact(str(exc)), _KINDS.get(status, "invalid"))
        translator = AguiRun(stream, hub.meter(stream.run_id).data, client_run_id=run_input.run_id)
        return EventSourceResponse(_sse(stream, translator), headers={"Cache-Control": "no-cache"})

    return [Route("/agui/{team}", run_agent, methods=["POST"])]


_KINDS = {402: "budget", 404: "not_found", 409: "busy", 422: "invalid", 429: "budget"}


def resume_decisions(entries: list[ResumeEntry]) -> dict[str, ApprovalDecision]:
    """AG-UI resume entries as approval decisions: ``cancelled`` denies, ``resolved`` decides by its payload."""
    raw: dict[str, Any] = {}
    for entry in entries:
        payload = entry.payload if isinstance(entry.payload, dict) else {}
        if entry.status == "cancelled":
            payload = {"action": "deny", "reason": payload.get("reason") or "cancelled by the user"}
        elif "editedArgs" in payload:
            payload = {"action": "edit", **payload, "args": payload["editedArgs"]}
            del payload["editedArgs"]
        raw[entry.interrupt_id] = payload
    return decisions_from(raw, "resume")


async def _sse(stream: TurnStream, run: AguiRun) -> AsyncIterator[bytes]:
    """The turn's AG-UI events as SSE frames; a client that goes away ends the turn (the hub saves it cancelled)."""
    encoder = EventEncoder()
    async with aclosing(_events(stream, run)) as events:
        async for event in events:
            yield encoder.encode(event).encode()


async def _events(stream: TurnStream, run: AguiRun) -> AsyncGenerator[BaseEvent, None]:
    for event in run.start():
        yield event
    try:
        # The hub's events are its generator (typed as an iterator): closed here when the client goes away.
        async with aclosing(stream.events) as team_events:
            async for team_event in team_events:
                for event in run.translate(team_event):
                    yield event
    except HuddleError as exc:
        for event in run.close():
            yield event
        yield RunErrorEvent(message=redact(str(exc)), code="error", timestamp=_now())
    except Exception as exc:  # a bug, not the user's doing: the client gets a clear end, the log the kind only
        logger.error("AG-UI run %s failed: %s", stream.run_id, type(exc).__name__)
        for event in run.close():
            yield event
        yield RunErrorEvent(message="the run failed inside the server", code="error", timestamp=_now())


class AguiRun:
    """One turn's `TeamEvent` s as AG-UI events, keeping the state the client mirrors and the message being
    streamed (AG-UI needs a start before content and an end after it; huddle's events only say who writes)."""

    def __init__(self, stream: TurnStream, meter: dict[str, Any], *, client_run_id: str) -> None:
        self.stream = stream
        self.client_run_id = client_run_id
        self.state: dict[str, Any] = {
            "plan": {"steps": []},
            "meter": _meter(meter),
            "speaker": None,
            "decisions": [],
        }
        self._sent: dict[str, Any] = copy.deepcopy(self.state)
        self._open: tuple[str, str] | None = None  # (source, message id) of the text message being streamed
        self._streamed = ""
        self._decision: dict[str, Any] = {}
        self._ids = 0

    def start(self) -> list[BaseEvent]:
        return [
            RunStartedEvent(
                thread_id=self.stream.session_id,
                run_id=self.stream.run_id,
                metadata={"client_run_id": self.client_run_id, "team": self.stream.team},
                timestamp=_now(),
            ),
            self._snapshot(),
        ]

    def translate(self, event: TeamEvent) -> list[BaseEvent]:
        """The AG-UI events one `TeamEvent` stands for, after its ``huddle.event``."""
        out: list[BaseEvent] = [CustomEvent(name="huddle.event", value=event.as_json(), timestamp=_now())]
        if event.kind == "speaker":
            self._decision = {
                "speaker": event.source,
                "policy": event.data.get("policy"),
                "reason": event.data.get("reason"),
            }
            self.state["speaker"] = event.source
            self.state["decisions"].append(self._decision)
            out += self._delta()
        elif event.kind == "text_delta":
            out += self._stream_text(event.source, event.text)
        elif event.kind == "text_reset" and self._open is not None and self._open[0] == event.source:
            out.append(self._reset(self._open[1]))
        elif event.kind in ("message", "plan"):
            if "steps" in event.data:  # a new plan, or a message after which its steps moved on
                self.state["plan"] = {"steps": event.data["steps"]}
                out += [self._snapshot()] if event.kind == "plan" else self._delta()
            if not event.data.get("internal") and event.source != "user":
                out += self._message(event.source, event.text)
        elif event.kind == "tool_calls":
            if "steps" in event.data:
                self.state["plan"] = {"steps": event.data["steps"]}
                out += self._delta()
            out += self._tool_calls(event)
        elif event.kind == "usage":
            self.state["meter"] = _meter(event.data)
            out += self._delta()
        elif event.kind == "approval":
            out += [*self.close(), *self._waiting(event)]
        elif event.kind == "result":
            out += self.close()
            out.append(self._finish(event.data))
        return out

    def _stream_text(self, source: str, delta: str) -> list[BaseEvent]:
        out: list[BaseEvent] = []
        if self._open is None or self._open[0] != source:
            out += self.close()
            out += self._open_message(source)
        if delta and self._open is not None:
            out.append(TextMessageContentEvent(message_id=self._open[1], delta=delta, timestamp=_now()))
            self._streamed += delta
        return out

    def _message(self, source: str, text: str) -> list[BaseEvent]:
        """A member's finished message: the end of its stream, or the whole message when it was not streamed. A
        streamed text that differs from the message (the member rewrote it) is reset and sent again whole."""
        out: list[BaseEvent] = []
        if self._open is None or self._open[0] != source:
            out += self.close()
            out += self._open_message(source)
        if self._open is not None and self._streamed != text:
            if self._streamed:
                out.append(self._reset(self._open[1]))
            if text:
                out.append(TextMessageContentEvent(message_id=self._open[1], delta=text, timestamp=_now()))
        out += self.close()
        return out

    def _open_message(self, source: str) -> list[BaseEvent]:
        message_id = self._next_id("msg")
        self._open, self._streamed = (source, message_id), ""
        return [
            self._speaker(source),
            TextMessageStartEvent(message_id=message_id, role="assistant", name=source, timestamp=_now()),
        ]

    def close(self) -> list[BaseEvent]:
        if self._open is None:
            return []
        message_id, self._open = self._open[1], None
        return [TextMessageEndEvent(message_id=message_id, timestamp=_now())]

    def _reset(self, message_id: str) -> CustomEvent:
        self._streamed = ""
        return CustomEvent(name="huddle.text_reset", value={"messageId": message_id}, timestamp=_now())

    def _speaker(self, source: str) -> CustomEvent:
        """Who writes what follows, and why the manager chose them (AG-UI's messages carry no reasons)."""
        why = self._decision if self._decision.get("speaker") == source else {}
        value = {"name": source, "policy": why.get("policy"), "reason": why.get("reason")}
        return CustomEvent(name="huddle.speaker", value=value, timestamp=_now())

    def _tool_calls(self, event: TeamEvent) -> list[BaseEvent]:
        calls: list[dict[str, Any]] = event.data.get("calls", [])
        if not calls:  # a report with no call to show it under: the executor's words as its message
            return self._message(event.source, event.text) if event.text else []
        reports = _reports(event.text, len(calls))
        out: list[BaseEvent] = [*self.close(), self._speaker(event.source)]
        for call, report in zip(calls, reports, strict=True):
            if _WAITS in report:  # not run: it comes as a waiting call with the approval event
                continue
            call_id = self._next_id("call")
            out += [
                ToolCallStartEvent(tool_call_id=call_id, tool_call_name=str(call.get("tool")), timestamp=_now()),
                ToolCallArgsEvent(tool_call_id=call_id, delta=json.dumps(call.get("args", {})), timestamp=_now()),
                ToolCallEndEvent(tool_call_id=call_id, timestamp=_now()),
                ToolCallResultEvent(
                    message_id=self._next_id("tool"),
                    tool_call_id=call_id,
                    content=report,
                    role="tool",
                    timestamp=_now(),
                ),
            ]
        return out

    def _waiting(self, event: TeamEvent) -> list[BaseEvent]:
        """The calls that wait for approval, as tool calls with no result yet (their ids the pending calls')."""
        out: list[BaseEvent] = [self._speaker(event.source)]
        for call in event.data["pending"]:
            out += [
                ToolCallStartEvent(tool_call_id=call["id"], tool_call_name=call["tool"], timestamp=_now()),
                ToolCallArgsEvent(tool_call_id=call["id"], delta=json.dumps(call["args"]), timestamp=_now()),
                ToolCallEndEvent(tool_call_id=call["id"], timestamp=_now()),
            ]
        return out

    def _finish(self, result: dict[str, Any]) -> BaseEvent:
        answer, stop_reason = str(result.get("answer", "")), str(result.get("stop_reason", ""))
        meter = self.state["meter"]
        usage = TokenUsage(
            input_tokens=meter["prompt_tokens"],
            output_tokens=meter["completion_tokens"],
            total_tokens=meter["prompt_tokens"] + meter["completion_tokens"],
        )
        pending: list[dict[str, Any]] = result.get("pending") or []
        if stop_reason == AWAITING and pending:
            return RunFinishedEvent(
                thread_id=self.stream.session_id,
                run_id=self.stream.run_id,
                outcome=RunFinishedInterruptOutcome(interrupts=[_interrupt(call) for call in pending]),
                result={**self._ids_of_run(), "answer": "", "stop_reason": stop_reason, "pending": pending},
                usage=[usage],
                timestamp=_now(),
            )
        if not answer:
            code = "run_failed" if stop_reason.startswith("error") else "no_answer"
            message = stop_reason or "the team gave no answer"
            return RunErrorEvent(message=message, code=code, usage=[usage], timestamp=_now())
        return RunFinishedEvent(
            thread_id=self.stream.session_id,
            run_id=self.stream.run_id,
            result={**self._ids_of_run(), "answer": answer, "stop_reason": stop_reason},
            usage=[usage],
            timestamp=_now(),
        )

    def _ids_of_run(self) -> dict[str, str]:
        return {"run_id": self.stream.run_id, "session_id": self.stream.session_id}

    def _snapshot(self) -> StateSnapshotEvent:
        self._sent = copy.deepcopy(self.state)
        return StateSnapshotEvent(snapshot=copy.deepcopy(self.state), timestamp=_now())

    def _delta(self) -> list[BaseEvent]:
        operations = json_patch(self._sent, self.state)
        if not operations:
            return []
        self._sent = copy.deepcopy(self.state)
        return [StateDeltaEvent.model_validate({"delta": operations, "timestamp": _now()})]

    def _next_id(self, what: str) -> str:
        self._ids += 1
        return f"{self.stream.run_id}-{what}-{self._ids}"


def json_patch(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """The RFC 6902 operations that turn `old` into `new`: per key for objects, appends and per item for lists
    (a plan step's status is one small ``replace``, a new decision one ``add``), a ``replace`` otherwise."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        operations: list[dict[str, Any]] = [{"op": "remove", "path": _at(path, k)} for k in old if k not in new]
        for key, value in new.items():
            if key in old:
                operations += json_patch(old[key], value, _at(path, key))
            else:
                operations.append({"op": "add", "path": _at(path, key), "value": value})
        return operations
    if isinstance(old, list) and isinstance(new, list) and len(new) >= len(old):
        operations = []
        for index, value in enumerate(old):
            operations += json_patch(value, new[index], _at(path, str(index)))
        operations += [{"op": "add", "path": f"{path}/-", "value": value} for value in new[len(old) :]]
        return operations
    return [{"op": "replace", "path": path, "value": new}]


def _at(path: str, key: str) -> str:
    return f"{path}/{key.replace('~', '~0').replace('/', '~1')}"


def _interrupt(call: dict[str, Any]) -> Interrupt:
    """One waiting call as an AG-UI interrupt, answered by its id."""
    why = {"tool": call["tool"], "args": call["args"], "agent": call["agent"], "step_id": call["step_id"]}
    return Interrupt(
        id=call["id"],
        reason="approval",
        message=f"{call['agent']} wants to run {call['tool']}",
        tool_call_id=call["id"],
        metadata={**why, "why": call.get("reason", "")},
    )


def _reports(text: str, calls: int) -> list[str]:
    """Each call's line of the executor's report, in call order; when the lines cannot be told apart (a result
    spanning lines that look like another call's), every call gets the whole report rather than a wrong one."""
    starts = [m.start() for m in _REPORT_LINE.finditer(text)]
    if len(starts) != calls:
        return [text] * calls
    return [text[a:b].strip() for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


def _task(run_input: RunAgentInput) -> str:
    """The last user message's text (its text parts joined, when it has parts)."""
    for message in reversed(run_input.messages):
        if isinstance(message, UserMessage):
            if isinstance(message.content, str):
                return message.content.strip()
            return "\n".join(getattr(part, "text", "") for part in message.content).strip()
    return ""


def _meter(data: dict[str, Any]) -> dict[str, Any]:
    return {key: data.get(key, 0 if key != "max_usd" else None) for key in _METER_FIELDS}


def _first_error(exc: ValueError) -> str:
    """One line naming the field that is wrong (pydantic's full report is many lines)."""
    if isinstance(exc, ValidationError) and exc.errors():
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "body"
        return f"{where}: {error['msg']}"
    return "not valid JSON"


def _now() -> int:
    """AG-UI timestamps: milliseconds since the epoch."""
    return int(time.time() * 1000)
