"""Keep dependencies' warnings off the user's screen; `huddle.cli.run` calls `quiet_dependencies` once at start.

On a CLI user's stderr belong huddle's own lines: its ``error:`` line, its notices and meters, and what huddle's
loggers say. Dependencies log and warn for their developers instead: autogen's "Model … not found. Using cl100k_base
encoding." for every model name tiktoken does not know (any budget-flagged run on Ollama or a custom server), chromadb's
telemetry errors, Python warnings raised inside a library. Nothing configures logging in huddle, so Python's
last-resort handler would print all of those between the agents' messages.

Who still asks for them gets them: with ``-W`` or ``PYTHONWARNINGS`` set, nothing is changed. This module is imported
before the command runs, so it imports only the standard library.
"""

from __future__ import annotations

import logging
import sys
import warnings

# Loggers whose records stay visible: huddle's own, and the mcp SDK's ("client" is its ClientSession), which
# huddle.tools.mcp shortens to one line because they describe the user's own MCP server misbehaving.
_SHOWN_LOGGERS = ("huddle", "mcp", "client")


def _is_shown(record: logging.LogRecord) -> bool:
    """Whether `record` comes from a logger in `_SHOWN_LOGGERS` (or one of their children)."""
    return record.name.split(".", 1)[0] in _SHOWN_LOGGERS


def quiet_dependencies() -> None:
    """Show huddle's warnings and errors as before, drop every other library's, and ignore Python warnings.

    A handler on the root logger takes the place of the last-resort handler (same stderr, same bare-message format),
    filtered to `_SHOWN_LOGGERS`.
    """
    if sys.warnoptions:
        return
    warnings.simplefilter("ignore")  # huddle tells users things on its console, never through `warnings`
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.addFilter(_is_shown)
    logging.getLogger().addHandler(handler)
