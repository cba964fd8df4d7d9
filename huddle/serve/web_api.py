"""The JSON the web page reads: the served teams, the caller's sessions and their turns, and each run's trace tree.

Read-only views of what the hub, the session store and the run log already hold, shaped for a page rather than for a
protocol. Every session view is the caller's own: the owner is whatever the API-key middleware put on
``request.state.owner`` (None without keys), and a session or run that is not theirs is a 404, exactly like one that
does not exist, so ids cannot be probed. A turn's ``error`` says why a failed or cancelled turn ended; a turn
``awaiting_approval`` lists its ``pending`` calls. Errors are JSON, ``{"error": {"message", "type", "code"}}``, never
a page or a stack trace. The read endpoints are plain functions: Starlette runs them in its thread pool, so the
SQLite reads never hold up the event loop that streams answers.

``POST /api/sessions/{id}/approve`` with ``{"decisions": {"<call id>": {"action": "approve" | "deny" | "edit",
"reason", "args"}}}`` takes up the session's paused turn and answers, once it has run, ``{answer, stop_reason,
run_id, session_id, pending}`` (``pending`` non-empty when it paused again): 404 for a session not the caller's,
409 while it answers, 422 for decisions that do not fit (nothing waits, an unknown call).
"""

from __future__ import annotations

import logging
import re
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from huddle.errors import HuddleError
from huddle.secrets import redact
from huddle.serve.approvals import decisions_from
from huddle.serve.hub import Hub, SessionNotFound
from huddle.storage.sessions import SessionStore
from huddle.tracing import read_run

logger = logging.getLogger("huddle.serve")

# Run ids are hex from the hub (and the CLI); anything else cannot name a run file, whatever it holds.
_RUN_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")

# Span attributes, as the run log records them (OpenTelemetry's GenAI names), that the page shows on every node.
_PROMPT_TOKENS = ("gen_ai.usage.input_tokens", "huddle.prompt_tokens")
_COMPLETION_TOKENS = ("gen_ai.usage.output_tokens", "huddle.completion_tokens")


def error_response(status: int, message: str, kind: str) -> JSONResponse:
    """The JSON error every non-OpenAI endpoint answers with (``/agui`` and ``/api``): one shape for the page."""
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def owner_of(request: Request) -> str | None:
    """The API key's owner the key middleware set (None on a server without keys)."""
    owner: str | None = getattr(request.state, "owner", None)
    return owner


def routes(hub: Hub) -> list[BaseRoute]:
    def teams(request: Request) -> JSONResponse:
        return JSONResponse(
            [
                {
                    "name": team.name,
                    "description": team.description,
                    "members": [{"name": m.name, "description": m.description} for m in team.members],
                }
                for team in hub.teams.values()
            ]
        )

    def sessions(request: Request) -> JSONResponse:
        return JSONResponse(
            [
                {"id": s.id, "team": s.team, "turns": s.turns, "updated": s.updated}
                for s in hub.sessions(owner_of(request))
            ]
        )

    def session(request: Request) -> JSONResponse:
        try:
            turns = hub.turns(request.path_params["session_id"], owner_of(request))
        except SessionNotFound as exc:
            return error_response(404, str(exc), "not_found")
        fields = {"turn", "run_id", "task", "status", "answer", "messages", "decisions", "plan", "error"}
        shown = [turn.model_dump(mode="json", include=fields) for turn in turns]
        for turn in shown:
            if turn["status"] == "awaiting_approval":
                pending = hub.pending(request.path_params["session_id"])
                turn["pending"] = [call.model_dump(mode="json") for call in pending]
        return JSONResponse(shown)

    async def approve(request: Request) -> JSONResponse:
        session_id = request.path_params["session_id"]
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, 'the body is not JSON: send {"decisions": {...}}', "invalid")
        try:
            decisions = decisions_from(body.get("decisions") if isinstance(body, dict) else None)
            stream = await hub.approve(_team_of(hub, session_id), session_id, decisions, owner_of(request))
            async with aclosing(stream.events) as events:
                result = [event async for event in events if event.kind == "result"]
        except HuddleError as exc:
            status = int(getattr(exc, "status", 400))
            return error_response(status, redact(str(exc)), _KINDS.get(status, "invalid"))
        except Exception as exc:  # a bug, not the caller's doing: a clear answer, the log the kind only
            logger.error("approving on session %s failed: %s", session_id, type(exc).__name__)
            return error_response(500, "the run failed inside the server", "error")
        data = result[-1].data if result else {}
        return JSONResponse(
            {
                "answer": data.get("answer", ""),
                "stop_reason": data.get("stop_reason", "the run ended without a result"),
                "run_id": stream.run_id,
                "session_id": session_id,
                "pending": data.get("pending", []),
            }
        )

    def trace(request: Request) -> JSONResponse:
        run_id = request.path_params["run_id"]
        tree = _trace(hub, run_id, owner_of(request)) if _RUN_ID.fullmatch(run_id) else None
        if tree is None:
            return error_response(404, f"no trace for run {run_id!r}", "not_found")
        return JSONResponse(tree)

    return [
        Route("/api/teams", teams, methods=["GET"]),
        Route("/api/sessions", sessions, methods=["GET"]),
        Route("/api/sessions/{session_id}", session, methods=["GET"]),
        Route("/api/sessions/{session_id}/approve", approve, methods=["POST"]),
        Route("/api/runs/{run_id}/trace", trace, methods=["GET"]),
    ]


_KINDS = {402: "budget", 404: "not_found", 409: "busy", 422: "invalid", 429: "budget"}


def _team_of(hub: Hub, session_id: str) -> str:
    """The served team a session belongs to (`SessionNotFound` when it has none served here)."""
    with SessionStore(hub.settings.sessions_location) as store:
        team = store.team_of(session_id) if session_id.isprintable() else None
    if team is None or team not in hub.teams:
        raise SessionNotFound(f"no session {session_id!r}")
    return team


def _trace(hub: Hub, run_id: str, owner: str | None) -> dict[str, Any] | None:
    """The run's span tree, rooted at its ``run`` span; None when there is no finished trace, or it is of a run on
    a session `owner` may not see (the run span names its session; a run without one was not served, so no caller
    of the server owns it)."""
    spans = read_run(hub.settings.run_log(), run_id)
    root = next((s for s in spans if s["parent"] is None and s["kind"] == "run"), None)
    if root is None:
        return None
    session_id = root["attributes"].get("huddle.session_id")
    if not isinstance(session_id, str) or not hub.access.owns(session_id, owner):
        return None
    ids = {span["id"] for span in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    for span in sorted(spans, key=lambda s: s["start"]):
        if span is root:
            continue
        # A span whose parent was never written (lost in a crash) still shows, under the run.
        parent = span["parent"] if span["parent"] in ids else root["id"]
        children.setdefault(parent, []).append(span)
    return _node(root, children)


def _node(span: dict[str, Any], children: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One span as the page draws it: its recorded attributes, plus the tokens and cost under short names."""
    attributes = dict(span["attributes"])
    prompt = next((attributes[k] for k in _PROMPT_TOKENS if k in attributes), None)
    completion = next((attributes[k] for k in _COMPLETION_TOKENS if k in attributes), None)
    if prompt is not None or completion is not None:
        attributes["prompt_tokens"] = prompt or 0
        attributes["completion_tokens"] = completion or 0
        attributes["tokens"] = (prompt or 0) + (completion or 0)
    if "huddle.cost_usd" in attributes:
        attributes["cost_usd"] = attributes["huddle.cost_usd"]
    return {
        "id": span["id"],
        "name": span["name"],
        "kind": span["kind"],
        "start": span["start"],
        "duration_s": max(0.0, span["end"] - span["start"]),
        "status": span["status"],
        "error": span["error"],
        "attributes": attributes,
        "children": [_node(child, children) for child in children.get(span["id"], [])],
    }
