"""Where team code touches the world outside its event loop: blocking work, fresh ids, the clock.

In-process these are ``asyncio.to_thread``, ``uuid4`` and ``time.time``. Inside a durable engine's workflow
(`huddle.engines.temporal`) the team's code is replayed after a crash, so each must come back the same way the
first time did: blocking work runs as a recorded step whose result is replayed, ids and time come from the engine's
deterministic sources. The engine installs its `Effects` with `install`; it answers only for the code that runs
inside one of its workflows (`Effects.active`), so the rest of the process is unaffected.

Team members, tools and custom agents call these instead of the stdlib ones so that they run the same way on any
engine.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

_T = TypeVar("_T")


class Effects(Protocol):
    """A durable engine's versions of the calls below, for code running inside its workflows."""

    def active(self) -> bool:
        """Whether the calling code runs inside one of the engine's workflows."""

    async def offload(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run `fn` (blocking, or a coroutine function doing I/O) as a recorded step; its result (or exception) is
        replayed, not recomputed."""

    def held(self, key: str) -> Any | None:
        """What the engine's host opened under `key` before any workflow ran (a worker holds a team's MCP servers:
        a workflow's event loop can start no process and open no socket), None when it holds nothing there."""

    def new_id(self) -> str:
        """A fresh id, the same one again on replay."""

    def now(self) -> float:
        """Epoch seconds, the same again on replay."""

    def replaying(self) -> bool:
        """Whether the code is being replayed (what it writes now was already written the first time)."""


_engine: Effects | None = None


def install(engine: Effects) -> None:
    """Make `engine` answer for the code inside its workflows (idempotent: one engine per process)."""
    global _engine
    _engine = engine


def _active() -> Effects | None:
    return _engine if _engine is not None and _engine.active() else None


async def offload(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """``await asyncio.to_thread(fn, *args, **kwargs)``, as a durable step inside a workflow."""
    engine = _active()
    if engine is None:
        return await asyncio.to_thread(fn, *args, **kwargs)
    result: _T = await engine.offload(fn, args, kwargs)
    return result


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling `fn` gives an awaitable to await (a coroutine function, or an object with an async
    ``__call__``) rather than a blocking call's value."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


async def step(fn: Callable[..., Awaitable[_T]], /, *args: Any, **kwargs: Any) -> _T:
    """``await fn(*args, **kwargs)`` for I/O (an async tool, an MCP call), as a durable step inside a workflow."""
    engine = _active()
    if engine is None:
        return await fn(*args, **kwargs)
    result: _T = await engine.offload(fn, args, kwargs)
    return result


def held(key: str) -> Any | None:
    """What a durable engine's host holds open under `key` for code inside its workflows; None in-process (the team
    opens its own)."""
    engine = _active()
    return engine.held(key) if engine is not None else None


def new_id() -> str:
    """32 hex digits, fresh each call (a replayed workflow gets the same ones again)."""
    engine = _active()
    return engine.new_id() if engine is not None else uuid.uuid4().hex


def now() -> float:
    """``time.time()``, or the workflow's own clock inside a workflow."""
    engine = _active()
    return engine.now() if engine is not None else time.time()


def replaying() -> bool:
    """True only while a workflow replays code whose side effects (trace lines) were written the first time."""
    engine = _active()
    return engine is not None and engine.replaying()
