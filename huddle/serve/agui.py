"""Placeholder while this protocol is being built (replaced by its implementation)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from huddle.serve.hub import Hub


def routes(hub: Hub) -> list[BaseRoute]:
    return []
