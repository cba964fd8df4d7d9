"""Placeholder while API keys are being built (replaced by its implementation)."""

from __future__ import annotations

from starlette.middleware import Middleware

from huddle.serve.hub import OpenAccess


class KeyAccess(OpenAccess):
    pass


def middleware(access: KeyAccess | None) -> list[Middleware]:
    return []
