"""User-facing errors.

Everything a user can get wrong (a config file, a YAML spec, a CLI flag, a missing extra) raises a `HuddleError`.
The CLI prints its message on one line and exits with its `exit_code`; no traceback is shown for these.
"""

from __future__ import annotations


class HuddleError(Exception):
    """An error caused by the user's input or environment, with a message that says how to fix it."""

    exit_code: int = 1


class ConfigError(HuddleError):
    """A configuration file, profile or spec is invalid; the message names the file, field and what was expected."""

    exit_code = 2


class MissingExtraError(HuddleError):
    """An optional dependency group is not installed; the message carries the exact pip command."""

    exit_code = 2

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(
            f'{what} needs the "{extra}" extra: pip install "huddle-agents[{extra}]"  '
            f'(from a checkout: pip install -e ".[{extra}]")'
        )
        self.extra = extra
