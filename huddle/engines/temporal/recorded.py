"""`huddle.effects` inside a Temporal workflow: blocking work as a local activity, ids and time from the workflow.

A local activity runs in the worker that runs the workflow, so the callable itself never travels: it is parked here
under a key the activity receives, and its outcome (a value or an exception) comes back pickled, to be stored in
the workflow's history. On replay the history answers and the callable is never run. Pickle, not JSON: the values
are our own objects (memory items, tool results, classifier guesses) produced by this worker for this worker's
deployment, stored in our own Temporal history; nothing from outside is unpickled. Text in an outcome (a tool's
result, an exception's message) is masked before it is stored, as every saved state is (`huddle.secrets`).
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import pickle
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

from huddle import effects
from huddle.secrets import redact

_parked: dict[str, tuple[contextvars.Context, Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = {}
OFFLOAD_TIMEOUT = timedelta(minutes=10)


_held: dict[str, Any] = {}


def hold(key: str, value: Any) -> None:
    """Keep `value` (live objects: open MCP servers' tools) for this worker's workflows to find with `effects.held`."""
    _held[key] = value


def held(key: str) -> Any | None:
    return _held.get(key)


@activity.defn(name="huddle.offload")
async def run_parked(key: str) -> str:
    """Run the parked callable in the caller's context, a coroutine function on the worker's own event loop (where
    its connections live) and anything else in a thread, and return its pickled outcome."""
    context, fn, args, kwargs = _parked[key]
    try:
        if effects.is_async(fn):
            result = await asyncio.create_task(fn(*args, **kwargs), context=context)
        else:
            result = await asyncio.to_thread(context.run, fn, *args, **kwargs)
        value: tuple[str, Any] = ("value", redact(result) if isinstance(result, str) else result)
    except Exception as exc:  # the team's code handles its own failures: hand the exception back to it
        exc.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in exc.args)
        value = ("error", exc)
    return base64.b64encode(pickle.dumps(value)).decode("ascii")


class WorkflowEffects:
    """The Temporal engine's `huddle.effects.Effects`."""

    def active(self) -> bool:
        return workflow.in_workflow()

    async def offload(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = workflow.uuid4().hex
        _parked[key] = (contextvars.copy_context(), fn, args, kwargs)
        try:
            packed = await workflow.execute_local_activity(run_parked, key, start_to_close_timeout=OFFLOAD_TIMEOUT)
        finally:
            _parked.pop(key, None)
        kind, value = pickle.loads(base64.b64decode(packed))
        if kind == "error":
            raise value
        return value

    def held(self, key: str) -> Any | None:
        return held(key)

    def new_id(self) -> str:
        return workflow.uuid4().hex

    def now(self) -> float:
        return workflow.now().timestamp()

    def replaying(self) -> bool:
        return workflow.unsafe.is_replaying()


effects.install(WorkflowEffects())
