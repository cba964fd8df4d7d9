"""The ``huddle`` command line: the root app, its global flags and the entry point; the commands live by group.

`huddle.cli.runs` (ask, run, chat), `huddle.cli.inspection` (models, runs, trace, usage, tools, prompts) and the
sub-apps `huddle.cli.sessions`, `huddle.cli.memory`, `huddle.cli.scenario`, `huddle.cli.serve` are registered here,
in the order ``huddle --help`` lists them. Only typer and rich are imported at module level; settings, autogen and
the model stack are imported inside the commands that need them, so ``huddle --help`` stays fast (see
docs/benchmarks.md).
User mistakes surface as one ``error: ...`` line and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from huddle import __version__
from huddle.cli import approvals, inspection, runs, worker
from huddle.cli.memory import memory_app
from huddle.cli.options import CliState, err, out
from huddle.cli.scenario import scenario_app
from huddle.cli.serve import serve_app
from huddle.cli.sessions import sessions_app
from huddle.errors import ExitCode, HuddleError

__all__ = ["CliState", "app", "run"]

app = typer.Typer(
    name="huddle",
    help="Managed group chats of specialised LLM agents, steered by token and dollar budgets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(memory_app, name="memory")
app.add_typer(scenario_app, name="scenario")
app.command("models")(inspection.models_command)
app.command("ask")(runs.ask_command)
app.command("run")(runs.run_command)
app.command("chat")(runs.chat_command)
app.command("approve")(approvals.approve_command)
app.add_typer(sessions_app, name="sessions")
app.command("trace")(inspection.trace_command)
app.command("runs")(inspection.runs_command)
app.command("usage")(inspection.usage_command)
app.command("tools")(inspection.tools_command)
app.command("prompts")(inspection.prompts_command)
app.add_typer(serve_app, name="serve")
app.command("worker")(worker.worker_command)
app.command("dev-server")(worker.dev_server_command)


def _version(value: bool) -> None:
    if value:
        out.print(f"huddle {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config file (default: $HUDDLE_CONFIG or ./huddle.yaml).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Profile name, PROFILE:MODEL, or a model name for the 'default' profile (gpt-4o)."
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where huddle keeps its data (default: $HUDDLE_HOME).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Managed group chats of specialised LLM agents, steered by token and dollar budgets."""
    ctx.obj = CliState(config=config, model=model, data_dir=data_dir)


@app.command("init")
def init_command(
    directory: Annotated[Path, typer.Argument(help="Where to create the project (created if missing).")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite the project's files if they exist.")] = False,
) -> None:
    """Create a starter project: huddle.yaml, a team with its own tool, a support scenario and offline tests."""
    from huddle.cli.scaffold import scaffold

    for path in scaffold(directory, force=force):
        out.print(f"created {path}", highlight=False)
    enter = "" if directory == Path(".") else f"cd {directory} && "
    out.print(f"next: {enter}python -m pytest -q   (then see README.md)", highlight=False)


@app.command("schema")
def schema_command(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write it to this file instead.")] = None,
) -> None:
    """Print the JSON Schema of a team YAML (any kind), for editors: completion and checks as you type."""
    import json

    from huddle.teams.kinds import team_schema

    text = json.dumps(team_schema(), indent=2)
    if output is None:
        print(text)
        return
    output.write_text(text + "\n", encoding="utf-8")
    out.print(f"wrote {output}", highlight=False)


def _as_utf8(arg: str) -> str:
    """`arg` with the bytes that were not UTF-8 replaced by U+FFFD.

    Python keeps such bytes of argv as lone surrogates, which fail with a UnicodeEncodeError wherever the text is
    encoded later (the ledger, a trace, an HTTP body); replacing them here makes every later step safe.
    """
    return os.fsencode(arg).decode(sys.getfilesystemencoding(), errors="replace")


def run(argv: list[str] | None = None) -> Any:
    """Entry point: runs the app and turns user errors into one line on stderr plus their exit code.

    The exit codes are listed in `huddle.errors` (and docs/cli.md). Arguments are decoded as UTF-8 with replacement,
    so a file name that is not valid UTF-8 cannot be given on the command line.
    """
    from huddle.cli.quiet import quiet_dependencies
    from huddle.secrets import redact

    quiet_dependencies()
    try:
        return app(args=[_as_utf8(arg) for arg in (sys.argv[1:] if argv is None else argv)])
    except HuddleError as exc:
        err.print(f"[red]error:[/red] {escape(redact(str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(ExitCode.INTERRUPTED)
