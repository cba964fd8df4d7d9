"""The ``huddle`` command line, on top of everything else: `app` (the root app and entry point), `options` (what
the commands share), `runs` (ask, run, chat), `inspection` (models, runs, trace, usage, tools, prompts), `console` and
`repl` (what run and chat show), `sessions`, `memory` and `scenario` (their sub-commands), `scaffold`
(``huddle init``), `quiet` (third-party noise)."""

from __future__ import annotations

from typing import Any


def run(argv: list[str] | None = None) -> Any:
    """Entry point (imports the command modules only when called, so ``import huddle.cli`` stays cheap)."""
    from huddle.cli.app import run as run_app

    return run_app(argv)
