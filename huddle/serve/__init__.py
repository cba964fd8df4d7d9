"""``huddle serve``: teams behind OpenAI-compatible, A2A and AG-UI endpoints, with a web chat page.

`app(settings, teams)` is the ASGI application (Starlette), for running under any ASGI server or mounting in a
user's own; ``huddle serve`` runs it on uvicorn. The parts, one per module: `hub` (the served teams and the turns
run on their sessions), `events` (what a run does, in one neutral shape), one module per protocol (`openai_api`,
`a2a_api`, `agui`), the page (`web`, assets in ``static/``), `keys` (API keys, owners, per-key budgets), `ops`
(health, readiness, metrics, access log) and `server` (uvicorn, workers, graceful shutdown).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from huddle.serve.application import app

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    """`app` imported on first use: the server stack (Starlette, the team stack) only comes with it."""
    if name == "app":
        from huddle.serve.application import app

        return app
    raise AttributeError(f"module 'huddle.serve' has no attribute {name!r}")
