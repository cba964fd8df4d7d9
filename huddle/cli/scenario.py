"""``huddle scenario``: run support-automation scenarios like a test suite, with pass^k, JSON, JUnit and cassettes.

Only typer and rich are imported at module level, like `huddle.cli`: the root command imports this module to list
the sub-command, and ``huddle --help`` must not pay for autogen, Chroma or the embedder. Exit codes: 0 when every
trial passed, 1 when one failed (or a cassette had no answer for a request), 2 for an invalid scenario, team,
rule file or cassette.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from huddle.cli.options import EngineOption, with_engine

if TYPE_CHECKING:
    from huddle.config.settings import Settings
    from huddle.evals.scenarios import SuiteResult

scenario_app = typer.Typer(
    help="Support-automation scenarios: a scripted customer, checkable outcomes, pass^k over trials.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)


@contextmanager
def _user_errors() -> Iterator[None]:
    """A user mistake is one ``error:`` line and its exit code (2 for an invalid file), never a traceback."""
    from huddle.errors import HuddleError
    from huddle.secrets import redact

    try:
        yield
    except HuddleError as exc:
        err.print(f"[red]error:[/red] {escape(redact(str(exc)))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _settings(ctx: typer.Context) -> Settings:
    """The root command's settings (global --config/--model/--data-dir) when there is one, else the defaults."""
    state = ctx.find_root().obj
    if state is not None and hasattr(state, "settings"):
        return state.settings()  # type: ignore[no-any-return]
    from huddle.config.settings import load_settings

    return load_settings()


@scenario_app.command("run")
def run_command(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Scenario files, or directories of them (their *.yaml).")],
    trials: Annotated[int, typer.Option("--trials", "-k", min=1, help="Trials per scenario (pass^1..pass^K).")] = 1,
    concurrency: Annotated[int, typer.Option("--concurrency", "-j", min=1, help="Trials run at once.")] = 1,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Profile (or scripted rule file) for every scenario, over the files'."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole suite result as JSON.")] = False,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write a JUnit XML report to this file.")] = None,
    record: Annotated[
        Path | None, typer.Option("--record", help="Record every model request and response into this cassette.")
    ] = None,
    replay: Annotated[
        Path | None, typer.Option("--replay", help="Answer every model request from this cassette (offline).")
    ] = None,
    engine: EngineOption = None,
) -> None:
    """Run scenarios: each trial on a fresh team, database and memory scope; every failing expectation is named."""
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from huddle.evals.scenarios import junit_xml, load_scenarios, run_async

    if record is not None and replay is not None:
        raise typer.BadParameter("give --record or --replay, not both")
    with _user_errors():
        settings = with_engine(_settings(ctx), engine)
        scenarios = load_scenarios(paths)
        root = ctx.find_root().obj
        progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=as_json,
        )
        task = progress.add_task("scenarios", total=len(scenarios) * trials)

        def advance(trial: Any) -> None:
            progress.update(task, advance=1, description=f"{trial.scenario} #{trial.trial}: {trial.status}")

        with progress:
            suite = asyncio.run(
                run_async(
                    scenarios,
                    trials=trials,
                    concurrency=concurrency,
                    settings=settings,
                    model=model or getattr(root, "model", None),
                    record=record,
                    replay=replay,
                    on_trial=advance,
                )
            )
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(junit_xml(suite) + "\n", encoding="utf-8")
    if as_json:
        print(suite.model_dump_json(indent=2))
    else:
        _report(suite)
    if record is not None:
        err.print(f"[dim]recorded into {record}[/dim]")
    raise typer.Exit(0 if suite.passed else 1)


@scenario_app.command("check")
def check_command(
    paths: Annotated[list[Path], typer.Argument(help="Scenario files, or directories of them (their *.yaml).")],
) -> None:
    """Validate scenario files (and their teams, files and rule files) without running them."""
    from huddle.evals.scenarios import load_scenarios

    with _user_errors():
        scenarios = load_scenarios(paths)
    for scenario in scenarios:
        out.print(f"ok  {scenario.name}  ({scenario.path})", highlight=False)


def _report(suite: SuiteResult) -> None:
    """A table with a row per scenario (means per trial; intent LLM: intent-detection model calls), then every failing
    expectation and error of every trial, then the pass^k line."""
    from rich import box
    from rich.table import Table

    from huddle.evals.scenarios import counts

    table = Table(box=box.SIMPLE_HEAD, title="Scenarios", padding=(0, 1))
    table.add_column("scenario", overflow="fold")
    table.add_column("passed", no_wrap=True)
    for column in ("turns", "tokens", "cost $", "secs", "intent LLM"):
        table.add_column(column, justify="right", no_wrap=True)
    for scenario in suite.scenarios:
        trials = scenario.trials
        n = len(trials) or 1
        colour = "green" if scenario.passes == len(trials) else "red"
        table.add_row(
            scenario.name,
            f"[{colour}]{scenario.passes}/{len(trials)}[/{colour}]",
            f"{sum(t.turns for t in trials) / n:.1f}",
            f"{sum(t.tokens for t in trials) / n:.0f}",
            f"{sum(t.cost_usd for t in trials):.4f}",
            f"{sum(t.latency_s for t in trials) / n:.1f}",
            str(sum(i.model_calls for t in trials for i in t.intents)),
        )
    out.print(table)
    for scenario in suite.scenarios:
        for trial in scenario.trials:
            if trial.status == "error":
                out.print(
                    f"[red]{scenario.name} #{trial.trial} error:[/red] {escape(trial.error or '')}", soft_wrap=True
                )
            for failure in trial.failures:
                out.print(
                    f"[red]{scenario.name} #{trial.trial} failed:[/red] {escape(failure)}",
                    highlight=False,
                    soft_wrap=True,
                )
    tally = counts(suite)
    passes = "  ".join(f"pass^{k} {v:.2f}" for k, v in suite.pass_hat_k.items())
    out.print(
        f"[bold]{passes}[/bold] · {len(suite.scenarios)} scenarios x {suite.trials} trials · "
        f"{tally['pass']} passed, {tally['fail']} failed, {tally['error']} errors · {suite.tokens} tokens · "
        f"${suite.cost_usd:.6f} · {suite.duration_s:.1f} s",
        highlight=False,
        soft_wrap=True,
    )
