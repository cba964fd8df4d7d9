"""The ASGI application: the hub, every protocol's routes and the middleware around them, in one Starlette app.

Each protocol module contributes ``routes(hub)``; the order below is the order requests are matched. Middleware
(outermost first): the access log and metrics (`ops`), then CORS when configured, then API keys and request limits
(`keys`). The hub is opened in the app's lifespan and, on startup, redoes once any turn a crash left unfinished.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from huddle.config.settings import Settings, load_settings
from huddle.serve import a2a_api, agui, keys, openai_api, ops, web, web_api
from huddle.serve.hub import Hub


def app(
    settings: Settings | None = None,
    teams: Sequence[str | Path] = ("assistant",),
    *,
    access: keys.KeyAccess | None = None,
    cors_origins: Sequence[str] = (),
) -> Starlette:
    """An ASGI app serving `teams` (preset names or team YAML paths) with `settings` (``huddle.yaml`` when None).

    `access` holds the API keys (`keys.KeyAccess`); without it every caller may use every session (loopback use).
    CORS is off unless `cors_origins` names the origins a browser may call from."""
    settings = settings or load_settings()
    hub = Hub(settings, teams, access=access)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        resuming = asyncio.create_task(hub.resume_unfinished())
        try:
            yield
        finally:
            await ops.drain(hub, resuming)
            hub.close()

    # CORS outside the key check, so a browser on an allowed origin can read a refusal (401, 413) too.
    cors = Middleware(
        CORSMiddleware,
        allow_origins=list(cors_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["authorization", "x-api-key", "content-type", "x-huddle-session"],
        expose_headers=["x-huddle-session", "x-huddle-run"],
    )
    middleware = [*ops.middleware(hub), *([cors] if cors_origins else []), *keys.middleware(access)]
    routes = [
        *ops.routes(hub),
        *openai_api.routes(hub),
        *a2a_api.routes(hub),
        *agui.routes(hub),
        *web_api.routes(hub),
        *web.routes(hub),
    ]
    application = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    application.state.hub = hub
    return application
