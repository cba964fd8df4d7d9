"""``huddle memory``: add, ingest, search, list and forget shared-memory items from the command line.

Registered on the root app as ``app.add_typer(memory_app, name="memory")``. Only typer and rich are imported at
module level: Chroma and the embedding model load inside the commands, so ``huddle --help`` stays fast. Settings
come from the root app's state (``ctx.obj.settings()``), which click hands down to sub-commands. add, ingest and
search use the scope ``user:default`` unless ``--scope`` says otherwise (search takes it repeatedly, to read several);
list shows every scope unless given one.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from huddle.memory.items import MemoryItem, RecalledItem
    from huddle.memory.store import VectorMemory

DEFAULT_SCOPE = "user:default"
DOCUMENT_SUFFIXES = (".md", ".markdown", ".txt")

memory_app = typer.Typer(
    help=f"Shared memory: remember facts, ingest documents, search, list and forget (default scope {DEFAULT_SCOPE}).",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

ScopeOption = Annotated[str, typer.Option("--scope", "-s", help="Scope as kind:value, e.g. team:support, user:alice.")]
ScopesOption = Annotated[
    list[str] | None, typer.Option("--scope", "-s", help=f"Scope(s) to read; repeatable. Default: {DEFAULT_SCOPE}.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _open(ctx: typer.Context) -> VectorMemory:
    """The store configured by huddle.yaml / HUDDLE_* (root CLI state, or plain settings when run standalone)."""
    from huddle.config.settings import load_settings
    from huddle.memory.store import VectorMemory

    state = ctx.find_root().obj
    settings = state.settings() if state is not None else load_settings()
    return VectorMemory.from_settings(settings)


def _row(item: MemoryItem, score: float | None = None) -> dict[str, Any]:
    """The ``--json`` shape of one item."""
    fields = item.model_dump(include={"id", "text", "scope", "kind", "tags", "agent", "run_id", "created_at"})
    return fields | {"score": score, "source": item.source, "chunk": item.chunk, "expires_at": item.expires_at}


def _print_items(items: list[MemoryItem], scores: list[float] | None, as_json: bool, empty: str) -> None:
    if as_json:
        print(json.dumps([_row(item, scores[n] if scores else None) for n, item in enumerate(items)], indent=2))
        return
    if not items:
        err.print(empty)
        return
    from rich.markup import escape

    # One header line of provenance, then the text indented: readable at any terminal width, unlike a table.
    for n, item in enumerate(items):
        created = datetime.fromtimestamp(item.created_at).strftime("%Y-%m-%d %H:%M")
        details = [item.scope, item.kind, item.agent, created]
        if item.tags:
            details.append("#" + " #".join(item.tags))
        if item.source:
            details.append(f"{Path(item.source).name}" + (f" [{item.chunk}]" if item.chunk is not None else ""))
        score = f"[bold]{scores[n]:.3f}[/bold]  " if scores else ""
        out.print(
            f"{score}[cyan]{item.id}[/cyan]  [dim]{escape(' · '.join(details))}[/dim]", highlight=False, soft_wrap=True
        )
        out.print("    " + escape(item.text).replace("\n", "\n    "), highlight=False, soft_wrap=True)


def _document_paths(paths: list[Path]) -> list[Path]:
    """Files as given; directories expanded to the markdown/text files anywhere below them, sorted.

    A link inside a directory that leads out of it is skipped (and said so): ingesting a shared folder must not
    copy ``/etc/passwd`` into a memory every agent reads.
    """
    from huddle.errors import HuddleError

    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            root = path.resolve()
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES):
                if file.resolve().is_relative_to(root):
                    found.append(file)
                else:
                    err.print(
                        f"skipped {file}: a link to outside {path}", markup=False, highlight=False, soft_wrap=True
                    )
        elif path.is_file():
            found.append(path)
        else:
            raise HuddleError(f"{path}: no such file or directory")
    if not found:
        raise HuddleError(f"no {'/'.join(DOCUMENT_SUFFIXES)} files in: {', '.join(map(str, paths))}")
    return found


@memory_app.command("add")
def add_command(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="The fact to remember.")],
    scope: ScopeOption = DEFAULT_SCOPE,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="A tag; repeatable.")] = None,
    kind: Annotated[str, typer.Option("--kind", help="fact, message or document.")] = "fact",
    ttl: Annotated[float | None, typer.Option("--ttl", min=0.001, help="Forget after this many seconds.")] = None,
) -> None:
    """Remember one text; prints its id."""
    from huddle.errors import HuddleError
    from huddle.memory.items import KINDS

    if kind not in KINDS:
        raise HuddleError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not text.strip():
        raise HuddleError("nothing to remember: TEXT is empty")
    item = _open(ctx).add(text, scope=scope, kind=kind, tags=tag or (), ttl_s=ttl)
    print(item.id)
    err.print(f"[dim]remembered in {item.scope}[/dim]", highlight=False)


@memory_app.command("ingest")
def ingest_command(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Markdown/text files, or directories searched for them.")],
    scope: ScopeOption = DEFAULT_SCOPE,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="A tag for every chunk; repeatable.")] = None,
    chunk_tokens: Annotated[int, typer.Option("--chunk-tokens", min=16, help="Most tokens per chunk.")] = 200,
    overlap_tokens: Annotated[int, typer.Option("--overlap-tokens", min=0, help="Tokens shared by neighbours.")] = 30,
) -> None:
    """Chunk documents into memory, each chunk keeping its file as source; re-ingesting a file replaces it."""
    from huddle.errors import HuddleError

    if overlap_tokens >= chunk_tokens:
        raise HuddleError("--overlap-tokens must be smaller than --chunk-tokens")
    files = _document_paths(paths)
    store = _open(ctx)
    total = 0
    for path in files:
        items = store.add_documents(
            [path], scope=scope, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens, tags=tag or ()
        )
        total += len(items)
        out.print(f"{path}: {len(items)} chunks", highlight=False)
    out.print(f"ingested {total} chunks from {len(files)} files into {scope}", highlight=False)


@memory_app.command("search")
def search_command(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="Most items to return.")] = 5,
    scope: ScopesOption = None,
    min_score: Annotated[
        float | None, typer.Option("--min-score", min=-1.0, max=1.0, help="Lowest cosine similarity to show.")
    ] = None,
    budget: Annotated[
        int | None, typer.Option("--budget", min=0, help="Most tokens of item text in total (best items first).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Items most similar in meaning to QUERY, best first, with their cosine similarity."""
    recalled: list[RecalledItem] = _open(ctx).recall(
        query, scopes=scope or [DEFAULT_SCOPE], k=k, min_score=min_score, token_budget=budget
    )
    _print_items(
        [entry.item for entry in recalled], [entry.score for entry in recalled], as_json, "[dim]nothing found[/dim]"
    )


@memory_app.command("list")
def list_command(
    ctx: typer.Context,
    scope: Annotated[str | None, typer.Option("--scope", "-s", help="Only this scope (default: every scope).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most items to show, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Stored items, newest first."""
    _print_items(_open(ctx).list(scope, limit=limit), None, as_json, "[dim]no memories[/dim]")


@memory_app.command("forget")
def forget_command(
    ctx: typer.Context,
    item_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="The item to forget.")] = None,
    scope: Annotated[str | None, typer.Option("--scope", "-s", help="Forget this whole scope.")] = None,
    expired: Annotated[
        bool, typer.Option("--expired", help="Forget items whose TTL has passed (in --scope if given).")
    ] = False,
) -> None:
    """Forget one item by id, a whole scope, or the expired items."""
    from huddle.errors import HuddleError

    if item_id is not None and (scope or expired):
        raise HuddleError("give either an ID, or --scope and/or --expired, not both")
    if item_id is None and not (scope or expired):
        raise HuddleError("nothing to forget: give an ID, --scope SCOPE or --expired")
    store = _open(ctx)
    if item_id is not None:
        if not store.forget(item_id):
            raise HuddleError(f"no memory item with id {item_id!r}")
        out.print(f"forgot {item_id}", highlight=False)
        return
    if expired:
        count = store.forget_expired([scope] if scope else None)
        out.print(f"forgot {count} expired items" + (f" in {scope}" if scope else ""), highlight=False)
    elif scope:
        out.print(f"forgot {store.forget_scope(scope)} items in {scope}", highlight=False)
