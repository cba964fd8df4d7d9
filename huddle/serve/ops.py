"""Placeholder while operability is being built (replaced by its implementation)."""

from __future__ import annotations

import asyncio

from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from huddle.serve.hub import Hub


def routes(hub: Hub) -> list[BaseRoute]:
    return []


def middleware(hub: Hub) -> list[Middleware]:
    return []


async def drain(hub: Hub, resuming: asyncio.Task[list[str]]) -> None:
    resuming.cancel()
