"""The web chat page at ``/``: one HTML file and its script and style, shipped in the package (``static/``).

No build step and no network: the page is plain JavaScript that talks to this server's own endpoints (the AG-UI
stream at ``/agui/{team}`` and the JSON under ``/api``), so it works offline and from a wheel. The page treats every
text a model, tool or memory wrote as data (``textContent``, never markup); the Content-Security-Policy below says
the same to the browser, so even a page bug cannot run a script or load anything from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from huddle.serve.hub import Hub

STATIC = Path(__file__).parent / "static"

# Everything from this server only; no inline script, no framing by other sites.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def _page(_: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=_HEADERS)


def routes(hub: Hub) -> list[BaseRoute]:
    """``/`` (the page) and ``/static/...`` (its script and style); the hub is not needed: the page calls the API."""
    return [
        Route("/", _page, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
