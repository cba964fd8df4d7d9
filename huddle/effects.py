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
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

_T = TypeVar("_T")


class Effects(Protocol):
    """A durable engine's versions of the calls below, for code running inside its workflows."""

    def active(self) -> bool:
        """Whether the calling code runs inside one of the engine's workflows."""

    async def offload(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run blocking `fn` as a recorded step; its result (or exception) is replayed, not recomputed."""

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
