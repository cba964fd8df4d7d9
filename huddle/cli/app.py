"""The ``huddle`` command line.

Only typer and rich are imported at module level; settings, autogen and the model stack are imported inside the
commands that need them, so ``huddle --help`` stays fast (see docs/benchmarks.md). User mistakes surface as one
``error: ...`` line and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from huddle import __version__
from huddle.cli.memory import memory_app
from huddle.cli.scenario import scenario_app
from huddle.errors import ExitCode, HuddleError, UsageError

if TYPE_CHECKING:
    from huddle.cli.console import Verbosity
    from huddle.config.settings import Settings

app = typer.Typer(
    name="huddle",
    help="Managed group chats of specialised LLM agents, steered by token and dollar budgets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
app.add_typer(memory_app, name="memory")
app.add_typer(scenario_app, name="scenario")


@dataclass
class CliState:
    """Global flags, turned into `Settings` only by commands that need them."""

    config: Path | None
    model: str | None
    data_dir: Path | None

    def settings(self) -> Settings:
        from huddle.config.settings import load_settings

        return load_settings(self.config, model=self.model, data_dir=self.data_dir)


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


@app.command("models")
def models_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List model profiles with provider, model, prices and which one is active."""
    settings = ctx.obj.settings()
    active = settings.profile()
    rows = []
    for name, profile in sorted(settings.profiles.items()):
        if profile.provider == "openai":
            key = "set" if profile.api_key() else ("not needed" if profile.base_url else "missing")
        else:
            key = "not needed"
        rows.append(
            {
                "name": name,
                "active": name == active.name,
                "provider": profile.provider,
                "model": active.model_name if name == active.name else profile.model_name,
                "base_url": profile.base_url,
                "input_per_mtok": profile.price.input_per_mtok,
                "output_per_mtok": profile.price.output_per_mtok,
                "context_window": profile.context_window,
                "fallback": profile.fallback,
                "api_key_env": profile.api_key_env if profile.provider == "openai" else None,
                "api_key": key,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, title="Model profiles (* = active, → = fallback)")
    for column in ("", "profile", "provider", "model", "$/1M in / out", "context", "API key"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            "*" if row["active"] else "",
            row["name"] + (f" → {row['fallback']}" if row["fallback"] else ""),
            row["provider"],
            row["model"] + (f" @ {row['base_url']}" if row["base_url"] else ""),
            f"{row['input_per_mtok']:g} / {row['output_per_mtok']:g}",
            f"{row['context_window']:,}",
            f"missing: {row['api_key_env']}" if row["api_key"] == "missing" else row["api_key"],
        )
    out.print(table)
    source = settings.config_file or "built-in defaults (no huddle.yaml)"
    out.print(f"[dim]config: {source}[/dim]")


def _not_blank(param: typer.CallbackParam, value: str | None) -> str | None:
    """Refuse an empty or whitespace-only TASK/PROMPT before anything is built or any model is called."""
    if value is not None and not value.strip():
        raise UsageError(f'the {param.name} is empty; say in quotes what you want, e.g. "Plan a team picnic"')
    return value


@app.command("ask")
def ask_command(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="What to ask the model.", callback=_not_blank)],
    system: Annotated[str | None, typer.Option("--system", help="A system prompt.")] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Print the reply as it arrives.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print answer and usage as JSON.")] = False,
) -> None:
    """Ask the active model profile one question directly (one metered call, no team)."""
    import asyncio

    from huddle.models.ask import ask

    settings = ctx.obj.settings()
    profile = settings.profile()
    run_id = uuid.uuid4().hex[:12]
    live = stream and not as_json

    def show(chunk: str) -> None:
        out.print(chunk, end="", markup=False, highlight=False, soft_wrap=True)

    answer, record = asyncio.run(
        ask(prompt, profile, settings.ledger_path, system=system, run_id=run_id, on_chunk=show if live else None)
    )
    if as_json:
        print(json.dumps({"answer": answer, "run_id": run_id, "usage": record.model_dump()}, indent=2))
        return
    out.print(answer, markup=False, highlight=False) if not live else out.print()
    err.print(
        f"[dim]{record.profile} · {record.model} · {record.prompt_tokens} prompt + {record.completion_tokens} "
        f"completion tokens ({record.token_source}) · ${record.cost_usd:.6f} · {record.latency_s:.2f} s · "
        f"run {run_id}[/dim]"
    )


TeamOption = Annotated[
    str, typer.Option("--team", "-t", help="A preset name (assistant) or a team YAML file of any kind.")
]
TaskArgument = Annotated[
    str | None, typer.Argument(help="The task for the team (optional with --resume).", callback=_not_blank)
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


def _team_settings(
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


QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print the answer only: no other speakers, no meter, no spinner.")
]
VerboseOption = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Print every event: the manager's decisions, tool calls, internal notes."),
]


def _verbosity(quiet: bool, verbose: bool) -> Verbosity:
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose exclude each other")
    return "quiet" if quiet else "verbose" if verbose else "normal"


@app.command("run")
def run_command(
    ctx: typer.Context,
    task: TaskArgument = None,
    team: TeamOption = "assistant",
    model: ModelOption = None,
    max_usd: MaxUsdOption = None,
    max_tokens: MaxTokensOption = None,
    cache: CacheOption = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Continue (or start) a durable session with this id.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Redo the session's turn a crash interrupted.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: answer, usage, ...")] = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Run one task on a team and print the answer (or, with --json, everything about the run).

    A run that gives no answer prints one ``error:`` line and exits 1 (after the JSON, with --json); Ctrl-C cancels
    it and exits 130."""
    import asyncio

    from huddle.cli.console import Interrupted, exit_interrupted, failure, meter, run_once
    from huddle.teams.group_chat import RunResult
    from huddle.teams.kinds import load_any_team

    if resume and not session:
        raise typer.BadParameter("--resume needs --session ID")
    if task is None and not resume:
        raise typer.BadParameter("give a TASK (or --session ID --resume)")
    verbosity = _verbosity(quiet, verbose)
    settings = _team_settings(ctx, model, max_usd, max_tokens, cache)
    spec = load_any_team(team)

    async def run_or_exit() -> RunResult:
        try:
            return await run_once(
                spec,
                settings,
                task,
                show=None if as_json else out,
                session_id=session,
                resume=resume,
                notices=err,
                verbosity=verbosity,
                status=err if err.is_terminal else None,
            )
        except Interrupted:
            exit_interrupted(err)

    result = asyncio.run(run_or_exit())
    if as_json:
        print(result.model_dump_json(indent=2))
    elif verbosity != "quiet":
        err.print(f"[dim]{meter(result)} · run {result.run_id}[/dim]")
    if (reason := failure(result)) is not None:
        raise HuddleError(reason)


@app.command("chat")
def chat_command(
    ctx: typer.Context,
    team: TeamOption = "assistant",
    model: ModelOption = None,
    max_usd: MaxUsdOption = None,
    max_tokens: MaxTokensOption = None,
    cache: CacheOption = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Resume this session (a new id starts one); saved every turn.")
    ] = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Chat with a team. Commands: /help, /cost, /plan, /session, /exit. Ctrl-C cancels a turn; the chat stays open.

    Piped input: one message per line; the chat exits 1 at the end of input if any turn failed."""
    import asyncio

    from huddle.cli.repl import chat
    from huddle.teams.kinds import load_any_team

    verbosity = _verbosity(quiet, verbose)
    settings = _team_settings(ctx, model, max_usd, max_tokens, cache)
    code = asyncio.run(
        chat(
            load_any_team(team),
            settings,
            session_id=session,
            console=out,
            errors=err,
            verbosity=verbosity,
            team_option=team,
        )
    )
    if code:
        raise typer.Exit(code)


sessions_app = typer.Typer(help="Durable chat sessions: list, show, delete.", no_args_is_help=True)
app.add_typer(sessions_app, name="sessions")


@sessions_app.command("list")
def sessions_list(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False
) -> None:
    """Sessions, most recent first, with their turn counts and unfinished turns."""
    from huddle.storage.sessions import SessionStore

    with SessionStore(ctx.obj.settings().sessions_path) as store:
        rows = [s.model_dump() for s in store.sessions()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        unfinished = f" ({row['unfinished']} unfinished)" if row["unfinished"] else ""
        out.print(f"{row['id']}  team {row['team']}  {row['turns']} turns{unfinished}", highlight=False)


@sessions_app.command("show")
def sessions_show(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="The session id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """A session's turns: each user message, the answer, and (with --json) every message and decision."""
    from huddle.storage.sessions import SessionStore

    with SessionStore(ctx.obj.settings().sessions_path) as store:
        turns = store.turns(session_id)
    if not turns:
        raise HuddleError(f"no session {session_id!r} (see `huddle sessions list`)")
    if as_json:
        print(json.dumps([t.model_dump() for t in turns], indent=2))
        return
    for turn in turns:
        out.print(f"[bold]turn {turn.turn}[/bold] ({turn.status}, run {turn.run_id}) you> {turn.task}", highlight=False)
        if turn.answer is not None:
            out.print(f"  answer> {turn.answer}", markup=False, highlight=False)


@sessions_app.command("delete")
def sessions_delete(ctx: typer.Context, session_id: Annotated[str, typer.Argument(help="The session id.")]) -> None:
    """Delete a session and its turns (its usage stays in the ledger)."""
    from huddle.storage.sessions import SessionStore

    with SessionStore(ctx.obj.settings().sessions_path) as store:
        deleted = store.delete(session_id)
    if not deleted:
        raise HuddleError(f"no session {session_id!r}")
    out.print(f"deleted session {session_id}")


@app.command("trace")
def trace_command(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run id (from `huddle runs`, or a run's output).")],
    as_json: Annotated[bool, typer.Option("--json", help="The spans as JSON.")] = False,
) -> None:
    """A run as a tree: agent turns, model and tool calls, manager decisions; latency, tokens, cost; failures marked."""
    from rich.tree import Tree

    from huddle.tracing import read_run

    spans = read_run(ctx.obj.settings().runs_dir, run_id)
    if not spans:
        raise HuddleError(f"no trace for run {run_id!r} (see `huddle runs`)")
    if as_json:
        print(json.dumps(spans, indent=2))
        return
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in sorted(spans, key=lambda s: s["start"]):
        children.setdefault(span["parent"], []).append(span)

    def label(span: dict[str, Any]) -> str:
        attrs = span["attributes"]
        parts = [f"{(span['end'] - span['start']) * 1000:.0f} ms"]
        if "prompt_tokens" in attrs:
            parts.append(f"{attrs['prompt_tokens']}+{attrs['completion_tokens']} tokens")
        if attrs.get("cost_usd"):
            parts.append(f"${attrs['cost_usd']:.6f}")
        if span["kind"] == "decision":
            parts.append(f"{attrs.get('policy')}: {attrs.get('reason')}")
        mark = f"[red]✗ {escape(span['error'] or 'failed')}[/red] " if span["status"] == "error" else ""
        return f"{mark}[bold]{escape(span['name'])}[/bold] [dim]{escape(' · '.join(parts))}[/dim]"

    def grow(node: Tree, parent: str | None) -> None:
        for span in children.get(parent, []):
            grow(node.add(label(span)), span["id"])

    roots = children.get(None, [])
    tree = Tree(label(roots[0]) if roots else f"run {run_id}")
    for root in roots:
        grow(tree, root["id"])
    out.print(tree)


@app.command("runs")
def runs_command(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many recent runs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Recent runs, newest first: team, stop reason, model calls, tokens, cost, failures."""
    from huddle.tracing import read_run

    folder = ctx.obj.settings().runs_dir
    files = (
        sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)[:limit] if folder.is_dir() else []
    )
    rows = []
    for path in files:
        spans = read_run(folder, path.stem)
        root = next((s for s in spans if s["kind"] == "run"), None)
        attrs = root["attributes"] if root else {}
        rows.append(
            {
                "run_id": path.stem,
                "team": attrs.get("team"),
                "task": attrs.get("task"),
                "finished": root is not None,
                "stop_reason": attrs.get("stop_reason"),
                "calls": attrs.get("calls"),
                "tokens": (attrs.get("prompt_tokens") or 0) + (attrs.get("completion_tokens") or 0),
                "cost_usd": attrs.get("cost_usd"),
                "failures": sum(s["status"] == "error" for s in spans),
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "" if row["finished"] else " [yellow](unfinished)[/yellow]"
        failures = f" [red]{row['failures']} failed[/red]" if row["failures"] else ""
        out.print(
            f"{row['run_id']}  {row['team']}  {row['calls']} calls  {row['tokens']} tokens  "
            f"${row['cost_usd'] or 0:.6f}{failures}{state}  [dim]{escape(str(row['task'])[:60])}[/dim]"
        )


@app.command("usage")
def usage_command(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run.")] = None,
    session_id: Annotated[str | None, typer.Option("--session", help="Only this session.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Tokens, calls and cost from the usage ledger, per agent and per model (all runs unless filtered)."""
    from huddle.usage import UsageLedger

    settings = ctx.obj.settings()
    ledger = UsageLedger(settings.ledger_path)
    try:
        filters = {"run_id": run_id, "session_id": session_id}
        report = {
            "total": ledger.totals(**filters).model_dump(),
            "by_agent": {k: v.model_dump() for k, v in ledger.by("agent", **filters).items()},
            "by_model": {k: v.model_dump() for k, v in ledger.by("model", **filters).items()},
        }
    finally:
        ledger.close()
    if as_json:
        print(json.dumps(report, indent=2))
        return
    from rich import box
    from rich.table import Table

    for key, title in (("by_agent", "agent"), ("by_model", "model")):
        table = Table(box=box.SIMPLE_HEAD, title=f"Usage by {title}")
        for column in (title, "calls", "prompt", "completion", "cached", "errors", "cost $"):
            table.add_column(column, justify="left" if column == title else "right")
        rows: dict[str, dict[str, Any]] = {**report[key], "total": report["total"]}
        for name, t in rows.items():
            table.add_row(
                name,
                str(t["calls"]),
                str(t["prompt_tokens"]),
                str(t["completion_tokens"]),
                str(t["cached_calls"]),
                str(t["errors"]),
                f"{t['cost_usd']:.6f}",
            )
        out.print(table)


@app.command("tools")
def tools_command(
    ctx: typer.Context,
    team: TeamOption = "assistant",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output, with full schemas.")] = False,
) -> None:
    """The tools and agents a team can see: each member's tool allowlist with schemas, and installed plugins."""
    from huddle.teams.group_chat import Members
    from huddle.teams.spec import load_team
    from huddle.tools.plugins import AGENTS_GROUP, TOOLS_GROUP, installed

    settings = ctx.obj.settings()
    spec = load_team(team)
    members = Members.resolve(spec, settings.workspace_dir)
    report: dict[str, Any] = {
        "team": spec.team.name,
        "agents": [
            {
                "name": name,
                "kind": (spec.agents[i].role or f"use: {spec.agents[i].use}"),
                "description": members.roster[name],
                "tools": [t.schema for t in members.toolsets.get(name, [])],
            }
            for i, name in enumerate(members.roster)
        ],
        "installed": {TOOLS_GROUP: installed(TOOLS_GROUP), AGENTS_GROUP: installed(AGENTS_GROUP)},
    }
    if as_json:
        print(json.dumps(report, indent=2))
        return
    out.print(f"[bold]team {spec.team.name}[/bold]")
    for agent in report["agents"]:
        out.print(f"  [cyan]{agent['name']}[/cyan] ({agent['kind']}): {agent['description']}", highlight=False)
        for schema in agent["tools"]:
            params = schema.get("parameters", {}).get("properties", {})
            args = ", ".join(f"{k}: {v.get('type', 'any')}" for k, v in params.items())
            out.print(f"      {schema['name']}({args}) — {schema.get('description', '')}", highlight=False)
    for group, entries in report["installed"].items():
        listed = ", ".join(f"{n} ({v})" for n, v in entries) or "none"
        out.print(f"[dim]installed {group}: {listed}[/dim]")


@app.command("prompts")
def prompts_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the prompt templates with their placeholders and token counts (cl100k_base)."""
    from huddle import prompts
    from huddle.models.tokens import count_text

    rows: list[dict[str, Any]] = [
        {"name": n, "tokens": count_text(t.text, "gpt-4"), "placeholders": sorted(t.placeholders)}
        for n, t in ((n, prompts.load(n)) for n in prompts.names())
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        out.print(f"{row['name']:16} {row['tokens']:5} tokens  {{{', '.join(row['placeholders'])}}}")


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
