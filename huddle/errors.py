"""User-facing errors, and the exit codes of the ``huddle`` command.

Everything a user can get wrong (a config file, a YAML spec, a CLI flag, a missing extra) raises a `HuddleError`.
The CLI prints its message on one line and exits with its `exit_code`; no traceback is shown for these.

Every exit code the CLI uses (docs/cli.md repeats this table for users; keep the two in step):

====  ======================================================================================================
code  meaning
====  ======================================================================================================
0     success: the answer was printed (``scenario run``: every trial passed)
1     the run failed or gave no answer (a model or server error, no model reachable), a scenario trial
      failed, or a session or run id is unknown (`HuddleError`)
2     usage or configuration error, nothing was run: a bad flag or argument (an empty task, ``--max-usd 0``),
      an invalid config or spec file, an unknown profile, a missing API key or extra (`UsageError`,
      `ConfigError`, `MissingExtraError`, click's own usage errors)
3     the run is waiting for a person's approval of a tool call (``huddle approve SESSION`` resumes it)
130   interrupted (Ctrl-C)
====  ======================================================================================================
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The non-zero codes of the table above."""

    FAILED = 1
    USAGE = 2
    AWAITING_APPROVAL = 3
    INTERRUPTED = 130


class HuddleError(Exception):
    """An error caused by the user's input or environment, with a message that says how to fix it."""

    exit_code: int = ExitCode.FAILED


class ConfigError(HuddleError):
    """A configuration file, profile or spec is invalid; the message names the file, field and what was expected."""

    exit_code = ExitCode.USAGE


class UsageError(HuddleError):
    """A command-line argument is unusable (an empty task, a zero limit); the message says what is expected."""

    exit_code = ExitCode.USAGE


class MissingExtraError(HuddleError):
    """An optional dependency group is not installed; the message carries the exact pip command."""

    exit_code = ExitCode.USAGE

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(
            f'{what} needs the "{extra}" extra: pip install "huddle-agents[{extra}]"  '
            f'(from a checkout: pip install -e ".[{extra}]")'
        )
        self.extra = extra
