"""``huddle models``, ``runs``, ``trace``, ``usage``, ``tools`` and ``prompts``: look at what huddle has and did.

Registered on the root app by `huddle.cli.app`. Each reads settings, traces, the ledger or a team and prints a table
(or, with --json, the same rows as JSON); none calls a model. rich's tables and trees load inside the commands.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from huddle.cli.options import JsonOption, TeamOption, out
from huddle.errors import HuddleError


def models_command(
    ctx: typer.Context,
    as_json: JsonOption = False,
) -> None:
    """List model profiles with provider, model, the prices calls will be charged (the profile's ``price:``, the
    genai-prices table's, free, or unknown) and which one is active."""
    from huddle.models.pricing import price_source, rates

    settings = ctx.obj.settings()
    active = settings.profile()
    rows = []
    for name, configured in sorted(settings.profiles.items()):
        profile = active if name == active.name else configured  # the active one with the model asked for
        price = rates(profile)
        if profile.provider == "openai":
            key = "set" if profile.api_key() else ("not needed" if profile.base_url else "missing")
        else:
            key = "not needed"
        rows.append(
            {
                "name": name,
                "active": name == active.name,
                "provider": profile.provider,
                "model": profile.model_name,
                "base_url": profile.base_url,
                "price_source": price_source(profile),
                "input_per_mtok": price.input_per_mtok if price else None,
                "output_per_mtok": price.output_per_mtok if price else None,
                "cached_input_per_mtok": price.cached_rate if price else None,
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

    table = Table(
        box=box.SIMPLE_HEAD, title="Model profiles (* = active, → = fallback)", pad_edge=False, collapse_padding=True
    )
    for column in ("", "profile", "provider", "model", "$/1M in / out", "price", "context", "API key"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            "*" if row["active"] else "",
            row["name"] + (f" → {row['fallback']}" if row["fallback"] else ""),
            row["provider"],
            row["model"] + (f" @ {row['base_url']}" if row["base_url"] else ""),
            "?" if row["input_per_mtok"] is None else f"{row['input_per_mtok']:g} / {row['output_per_mtok']:g}",
            row["price_source"],
            f"{row['context_window']:,}",
            f"missing: {row['api_key_env']}" if row["api_key"] == "missing" else row["api_key"],
        )
    out.print(table)
    out.print(
        "[dim]price: the profile's price:, the genai-prices table's for the model, free, or unknown (calls cost $0; "
        "give the profile a price:). --json shows cached_input_per_mtok too.[/dim]"
    )
    source = settings.config_file or "built-in defaults (no huddle.yaml)"
    out.print(f"[dim]config: {source}[/dim]")


def trace_command(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run id (from `huddle runs`, or a run's output).")],
    as_json: Annotated[bool, typer.Option("--json", help="The spans as JSON.")] = False,
) -> None:
    """A run as a tree: agent turns, model and tool calls, manager decisions; latency, tokens, cost; failures marked."""
    from rich.tree import Tree

    from huddle.tracing import read_run

    spans = read_run(ctx.obj.settings().run_log(), run_id)
    if not spans:
        off = (
            " — OTEL_SDK_DISABLED=true turns tracing off"
            if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
            else ""
        )
        raise HuddleError(f"no trace for run {run_id!r} (see `huddle runs`){off}")
    if as_json:
        print(json.dumps(spans, indent=2))
        return
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in sorted(spans, key=lambda s: s["start"]):
        children.setdefault(span["parent"], []).append(span)

    def label(span: dict[str, Any]) -> str:
        attrs = span["attributes"]
        parts = [f"{(span['end'] - span['start']) * 1000:.0f} ms"]
        if "gen_ai.usage.input_tokens" in attrs:
            parts.append(f"{attrs['gen_ai.usage.input_tokens']}+{attrs.get('gen_ai.usage.output_tokens', 0)} tokens")
        if attrs.get("huddle.cost_usd"):
            parts.append(f"${attrs['huddle.cost_usd']:.6f}")
        if span["kind"] == "decision":
            parts.append(f"{attrs.get('huddle.policy')}: {attrs.get('huddle.reason')}")
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


def runs_command(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many recent runs.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Recent runs, newest first: team, stop reason, model calls, tokens, cost, failures."""
    from huddle.tracing import read_run

    log = ctx.obj.settings().run_log()
    rows = []
    for run_id in log.recent(limit):
        spans = read_run(log, run_id)
        root = next((s for s in spans if s["kind"] == "run" and s["parent"] is None), None)  # not a nested run
        attrs = root["attributes"] if root else {}
        rows.append(
            {
                "run_id": run_id,
                "team": attrs.get("huddle.team"),
                "task": attrs.get("huddle.task"),
                "finished": root is not None,
                "stop_reason": attrs.get("huddle.stop_reason"),
                "calls": attrs.get("huddle.calls"),
                "tokens": (attrs.get("huddle.prompt_tokens") or 0) + (attrs.get("huddle.completion_tokens") or 0),
                "cost_usd": attrs.get("huddle.cost_usd"),
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


def usage_command(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run.")] = None,
    session_id: Annotated[str | None, typer.Option("--session", help="Only this session.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Tokens, calls and cost from the usage ledger, per agent and per model (all runs unless filtered): prompt tokens
    the provider read from its cache and what that saved, and calls whose price is unknown (not in the cost)."""
    from huddle.usage import UsageLedger

    settings = ctx.obj.settings()
    ledger = UsageLedger(settings.ledger_location)
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
        table = Table(box=box.SIMPLE_HEAD, title=f"Usage by {title}", pad_edge=False, collapse_padding=True)
        columns = (title, "calls", "prompt", "cached", "completion", "errors", "cost $", "saved $")
        for column in columns:
            table.add_column(column, justify="left" if column == title else "right")
        rows: dict[str, dict[str, Any]] = {**report[key], "total": report["total"]}
        for name, t in rows.items():
            table.add_row(
                name,
                str(t["calls"]),
                str(t["prompt_tokens"]),
                str(t["cached_tokens"]),
                str(t["completion_tokens"]),
                str(t["errors"]),
                f"{t['cost_usd']:.6f}" + ("*" if t["unpriced_calls"] else ""),
                f"{t['saved_usd']:.6f}",
            )
        out.print(table)
    _print_usage_notes(report)


def _print_usage_notes(report: dict[str, Any]) -> None:
    """What the tables' columns cannot say: what prompt caching did, and which models' price is unknown."""
    total = report["total"]
    if total["cached_calls"]:
        out.print(f"{total['cached_calls']} call(s) answered by huddle's response cache, at no cost")
    if total["cached_tokens"]:
        share = total["cached_tokens"] / max(total["prompt_tokens"], 1)
        out.print(
            f"prompt caching: {share:.0%} of prompt tokens read from the provider's cache (cached), "
            f"saved ${total['saved_usd']:.6f}"
        )
    unknown = [name for name, t in report["by_model"].items() if t["unpriced_calls"]]
    if unknown:
        out.print(
            f"* price unknown for {total['unpriced_calls']} call(s) of {', '.join(unknown)}: not in cost $ "
            "(the price table does not list the model; give its profile a price:)",
            soft_wrap=True,
        )


def tools_command(
    ctx: typer.Context,
    team: TeamOption = "assistant",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output, with full schemas.")] = False,
) -> None:
    """The tools and agents a team of any kind can see: each member's tool allowlist with schemas (a nested team's
    members under it; the tool executor's MCP servers are started to list theirs), and installed plugins."""
    from huddle.teams.kinds import load_any_team
    from huddle.tools.plugins import AGENTS_GROUP, TOOLS_GROUP, installed

    settings = ctx.obj.settings()
    spec = load_any_team(team)
    report: dict[str, Any] = {
        "team": spec.team.name,
        "kind": getattr(spec.team, "kind", "group_chat"),
        "agents": _members(spec, settings.workspace_dir),
        "installed": {TOOLS_GROUP: installed(TOOLS_GROUP), AGENTS_GROUP: installed(AGENTS_GROUP)},
    }
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        out.print(f"[bold]team {spec.team.name}[/bold] ({report['kind']})")
        _print_members(report["agents"], "  ")
        for group, entries in report["installed"].items():
            listed = ", ".join(f"{n} ({v})" for n, v in entries) or "none"
            out.print(f"[dim]installed {group}: {listed}[/dim]")
    if _mcp_failed(report["agents"]):
        raise typer.Exit(1)  # the listing already says which server failed and why


def _members(spec: Any, workspace: Path) -> list[dict[str, Any]]:
    """One row per member of a team of any kind: a group chat's with their tools, a pattern's (model agents, custom
    agents, nested teams with their own members) as the spec names them."""
    from huddle.teams.group_chat import Members
    from huddle.teams.kinds import PatternSpec

    if not isinstance(spec, PatternSpec):
        members = Members.resolve(spec, workspace)
        rows: list[dict[str, Any]] = [
            {
                "name": name,
                "kind": (spec.agents[i].role or f"use: {spec.agents[i].use}"),
                "description": members.roster[name],
                "tools": [t.schema for t in members.toolsets.get(name, [])],
            }
            for i, name in enumerate(members.roster)
        ]
        executor = spec.member("tool_executor")
        if spec.team.mcp and executor is not None:
            servers = _mcp_servers(spec.team.mcp)
            executor_row = next(r for r in rows if r["name"] == executor.agent_name)
            executor_row["tools"] += [schema for server in servers for schema in server.pop("schemas")]
            executor_row["mcp"] = servers
        return rows
    rows = []
    for member in spec.members():
        kind = {"model": "model agent", "agent": f"use: {member.use}", "team": f"team {member.team_spec_name}"}
        role = "manager, " if member is spec.manager else "aggregator, " if member is spec.aggregator else ""
        row: dict[str, Any] = {
            "name": member.name,
            "kind": role + kind[member.kind],
            "description": member.member_description,
            "tools": [],
        }
        if member.kind == "team" and not isinstance(member.team, str):
            row["members"] = _members(member.team, workspace)
        rows.append(row)
    return rows


def _mcp_servers(specs: list[Any]) -> list[dict[str, Any]]:
    """Start a team's MCP servers (each within its startup timeout), note their tools and stop them again: one row
    per server with its tool names, the tools' schemas (moved to the member's tools) and why it failed, if it did."""
    import asyncio

    from huddle.tools.mcp import list_mcp_tools

    return [
        {
            "server": listing.spec.label,
            "tools": [tool.name for tool in listing.tools],
            "schemas": [tool.schema for tool in listing.tools],
            "error": listing.error,
        }
        for listing in asyncio.run(list_mcp_tools(specs))
    ]


def _mcp_failed(rows: list[dict[str, Any]]) -> bool:
    """Whether an MCP server of any member, nested teams included, failed to start."""
    return any(
        any(server["error"] for server in row.get("mcp", [])) or _mcp_failed(row.get("members", [])) for row in rows
    )


def _print_members(rows: list[dict[str, Any]], indent: str) -> None:
    for agent in rows:
        out.print(f"{indent}[cyan]{agent['name']}[/cyan] ({agent['kind']}): {agent['description']}", highlight=False)
        for server in agent.get("mcp", []):
            if server["error"]:
                # One line however wide the terminal: it is the server's whole error message.
                out.print(f"{indent}    [red]error:[/red] {escape(server['error'])}", highlight=False, soft_wrap=True)
            else:
                listed = ", ".join(server["tools"]) or "no tools"
                out.print(f"{indent}    [dim]MCP server {escape(server['server'])}: {escape(listed)}[/dim]")
        for schema in agent["tools"]:
            params = schema.get("parameters", {}).get("properties", {})
            args = ", ".join(f"{k}: {v.get('type', 'any')}" for k, v in params.items())
            out.print(f"{indent}    {schema['name']}({args}) — {schema.get('description', '')}", highlight=False)
        _print_members(agent.get("members", []), indent + "    ")


def prompts_command(
    as_json: JsonOption = False,
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
