"""What every ``huddle`` command shares: the global flags' state, the two consoles, and the run/chat options.

Kept apart from `huddle.cli.app` so the command modules (`runs`, `inspection`, `sessions`) can use them without
importing the root app, which imports them. Only typer and rich are imported here, like in every CLI module.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from huddle.errors import UsageError

if TYPE_CHECKING:
    from huddle.cli.console import Verbosity
    from huddle.config.settings import Settings

out = Console()
err = Console(stderr=True)


@dataclass
class CliState:
    """Global flags, turned into `Settings` only by commands that need them."""

    config: Path | None
    model: str | None
    data_dir: Path | None

    def settings(self) -> Settings:
        """The settings, with a data directory that is not a file (every store, trace and cache lives under it)."""
        from huddle.config.settings import load_settings

        settings = load_settings(self.config, model=self.model, data_dir=self.data_dir)
        if settings.data_dir.exists() and not settings.data_dir.is_dir():
            raise UsageError(
                f"the data directory {settings.data_dir} is a file, not a folder; give --data-dir (or HUDDLE_HOME) "
                "a folder, new or existing"
            )
        return settings


JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def not_blank(param: typer.CallbackParam, value: str | None) -> str | None:
    """Refuse an empty or whitespace-only TASK/PROMPT before anything is built or any model is called."""
    if value is not None and not value.strip():
        raise UsageError(f'the {param.name} is empty; say in quotes what you want, e.g. "Plan a team picnic"')
    return value


TeamOption = Annotated[
    str, typer.Option("--team", "-t", help="A preset name (assistant) or a team YAML file of any kind.")
]
TaskArgument = Annotated[
    str | None, typer.Argument(help="The task for the team (optional with --resume).", callback=not_blank)
]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Profile, PROFILE:MODEL or model name for the team; overrides the global flag."),
]


def _positive_limit(param: typer.CallbackParam, value: float | None) -> float | None:
    """Refuse a limit of 0 or less: 0 reads as "spend nothing" but a limit that cannot be met is no limit at all."""
    if value is not None and not value > 0:  # `not >` also refuses nan
        flag = param.opts[0]
        raise UsageError(
            f"{flag} must be a positive number, got {value:g}; omit {flag} for no limit beyond the config's budget.run"
        )
    return value


MaxUsdOption = Annotated[
    float | None, typer.Option("--max-usd", help="Hard dollar limit per run (> 0).", callback=_positive_limit)
]
MaxTokensOption = Annotated[
    int | None, typer.Option("--max-tokens", help="Hard token limit per run (> 0).", callback=_positive_limit)
]
CacheOption = Annotated[
    bool | None, typer.Option("--cache/--no-cache", help="Answer identical model requests from the disk cache.")
]


def team_settings(
    ctx: typer.Context, model: str | None, max_usd: float | None, max_tokens: int | None, cache: bool | None
) -> Settings:
    """Settings with the run/chat flags applied over the config (flags win)."""
    settings: Settings = ctx.obj.settings()
    if model:
        settings.model = model
    if max_usd is not None:
        settings.budget.run.max_usd = max_usd
    if max_tokens is not None:
        settings.budget.run.max_tokens = max_tokens
    if cache is not None:
        settings.cache = cache
    return settings


class Engine(StrEnum):
    """``--engine``: overrides ``engine:`` in huddle.yaml."""

    local = "local"
    temporal = "temporal"


EngineOption = Annotated[
    Engine | None,
    typer.Option("--engine", help="Where the team runs: local (this process) or temporal (on huddle workers)."),
]


def with_engine(settings: Settings, engine: Engine | None) -> Settings:
    """`settings` with ``--engine`` applied over ``engine:`` in the config (the flag wins)."""
    if engine is not None:
        settings.engine = engine.value
    return settings


QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print the answer only: no other speakers, no meter, no spinner.")
]
VerboseOption = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Print every event: the manager's decisions, tool calls, internal notes."),
]


def verbosity(quiet: bool, verbose: bool) -> Verbosity:
    """One verbosity from the two flags, which exclude each other."""
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose exclude each other")
    return "quiet" if quiet else "verbose" if verbose else "normal"
