"""The OpenAI-compatible surface of ``huddle serve``: each served team is a ``model`` any OpenAI client can call.

``GET /v1/models`` (and ``/v1/models/{team}``) list the teams; ``POST /v1/chat/completions`` (`openai_chat`) and
``POST /v1/responses`` with ``GET /v1/responses/{id}`` (`openai_responses`) run them; what they share (errors in
OpenAI's shape, sessions, usage from the ledger) is in `openai_wire`.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from huddle.errors import HuddleError
from huddle.serve import openai_chat, openai_responses
from huddle.serve.hub import Hub, ServedTeam
from huddle.serve.openai_wire import error_response


def routes(hub: Hub) -> list[BaseRoute]:
    created = int(time.time())

    def model(served: ServedTeam) -> dict[str, Any]:
        members = [{"name": m.name, "description": m.description} for m in served.members]
        return {
            "id": served.name,
            "object": "model",
            "created": created,
            "owned_by": "huddle",
            "huddle": {"description": served.description, "members": members},
        }

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model(served) for served in hub.teams.values()]})

    async def one_model(request: Request) -> Response:
        try:
            return JSONResponse(model(hub.team(request.path_params["team"])))
        except HuddleError as exc:
            return error_response(exc)

    return [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{team:path}", one_model, methods=["GET"]),
        Route("/v1/chat/completions", openai_chat.chat_completions(hub), methods=["POST"]),
        Route("/v1/responses", openai_responses.create(hub), methods=["POST"]),
        Route("/v1/responses/{response_id}", openai_responses.retrieve(hub), methods=["GET"]),
    ]
