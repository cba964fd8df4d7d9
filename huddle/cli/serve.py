"""``huddle serve``: run teams as an HTTP server (OpenAI-compatible, A2A, AG-UI, the web page); ``huddle serve keys``
manages the API keys a server off loopback requires.

Registered on the root app as ``app.add_typer(serve_app, name="serve")``. The server stack (Starlette, uvicorn, the
team stack) is imported inside the commands, and needs the ``serve`` extra.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from huddle.cli.options import EngineOption, JsonOption, out, with_engine
from huddle.errors import MissingExtraError

serve_app = typer.Typer(
    help="Serve teams over HTTP: OpenAI-compatible, A2A and AG-UI endpoints and a web chat page.",
    invoke_without_command=True,
)
keys_app = typer.Typer(help="API keys for `huddle serve`: add, list, revoke.", no_args_is_help=True)
serve_app.add_typer(keys_app, name="keys")


def _extra() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MissingExtraError("huddle serve", "serve") from None


@serve_app.callback()
def serve_command(
    ctx: typer.Context,
    team: Annotated[
        list[str] | None, typer.Option("--team", "-t", help="A preset name or team YAML to serve (repeatable).")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Interface to listen on; off loopback, API keys are required.")
    ] = ("127.0.0.1"),
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free port).")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes on one data dir.")] = 1,
    cors_origin: Annotated[
        list[str] | None, typer.Option("--cors-origin", help="An origin browsers may call from (repeatable).")
    ] = None,
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout",
            min=0,
            help="Seconds a stopping server lets its runs finish; runs still going are redone at the next start.",
        ),
    ] = 30.0,
    engine: EngineOption = None,
) -> None:
    """Serve teams (default: the assistant) at http://HOST:PORT until Ctrl-C or SIGTERM, which finish the runs in
    progress first. With --engine temporal the turns run on `huddle worker` processes."""
    if ctx.invoked_subcommand is not None:
        return
    _extra()
    from huddle.serve.server import serve

    serve(
        with_engine(ctx.obj.settings(), engine),
        teams=team or ["assistant"],
        host=host,
        port=port,
        workers=workers,
        cors_origins=cors_origin or [],
        drain_s=drain_timeout,
    )


@keys_app.command("add")
def keys_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who the key is for (shown in listings and the access log).")],
    usd_per_day: Annotated[
        float | None, typer.Option("--usd-per-day", min=0, help="Most this key may spend per UTC day.")
    ] = None,
    usd_per_session: Annotated[
        float | None, typer.Option("--usd-per-session", min=0, help="Most one of its sessions may spend.")
    ] = None,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    _extra()
    from huddle.serve.keys import KeyStore

    with KeyStore.of(ctx.obj.settings()) as store:
        secret = store.add(name, usd_per_day=usd_per_day, usd_per_session=usd_per_session)
    out.print(secret, markup=False, highlight=False)


@keys_app.command("list")
def keys_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The keys: name, id, limits, when made and last used (never the key itself)."""
    _extra()
    from huddle.serve.keys import KeyStore

    with KeyStore.of(ctx.obj.settings()) as store:
        rows = [key.model_dump(mode="json") for key in store.list()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        out.print("  ".join(f"{k} {v}" for k, v in row.items() if v is not None), highlight=False)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id (from `huddle serve keys list`).")]
) -> None:
    """Revoke a key: requests with it get 401 from then on (its sessions stay, unreachable)."""
    _extra()
    from huddle.serve.keys import KeyStore

    with KeyStore.of(ctx.obj.settings()) as store:
        store.revoke(key_id)
    out.print(f"revoked {key_id}")
