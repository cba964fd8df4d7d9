"""One running MCP server: its process, its client session held open in a task of its own, its calls and tools."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huddle.errors import ConfigError, HuddleError
from huddle.tools.mcp.adapter import (
    EXTRAS_FIELD,
    TOOL_NAME_RE,
    McpTool,
    McpToolError,
    carrier_model,
    exposed_name,
    input_schema,
    result_text,
    side_effects_of,
)
from huddle.tools.mcp.spec import McpServerSpec

if TYPE_CHECKING:
    from mcp import ClientSession
    from mcp import types as mcp_types

logger = logging.getLogger("huddle.tools.mcp")

# After closing a server's stdin the SDK waits 2 s, then SIGTERMs, waits 2 s more and SIGKILLs; past this much more we
# cancel the server's task outright rather than hang the exit.
SHUTDOWN_TIMEOUT_S = 10.0
# How much of a failed server's stderr an error message quotes (its last lines usually say what went wrong).
_STDERR_TAIL_LINES = 3
_STDERR_TAIL_BYTES = 4096


class McpServer:
    """One running server: a task that holds its connection (stdio or HTTP) and session open until `close` is called.

    The SDK's transport uses anyio cancel scopes that must be entered and left in one task, so the connection lives
    in its own task (`_serve`) rather than in the caller's; calls are plain requests on the session from any task.
    """

    def __init__(self, spec: McpServerSpec) -> None:
        self.spec = spec
        self.session: ClientSession | None = None
        self.tools: list[mcp_types.Tool] = []
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stderr_path: Path | None = None
        self._lost = False

    # -- lifecycle ----------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start (or reach) the server and list its tools; a failure or a hang is a `HuddleError` naming it."""
        spec = self.spec
        if spec.command is not None:
            self._check_launchable(spec.command)
            fd, path = tempfile.mkstemp(prefix="huddle-mcp-", suffix=".stderr")
            os.close(fd)
            self._stderr_path = Path(path)
            headers: dict[str, str] = {}
        else:
            headers = spec.resolved_headers()
        self._task = asyncio.create_task(self._serve(headers), name=f"mcp server {spec.command_line}")
        ready = asyncio.create_task(self._ready.wait())
        try:
            await asyncio.wait({self._task, ready}, timeout=spec.startup_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._ready.is_set():
            return
        if self._task.done():
            exc = None if self._task.cancelled() else self._task.exception()
            reason = one_line(exc) if exc is not None else "it exited"
            raise HuddleError(f"MCP server {spec.label} failed to start: {reason}{self._stderr_note()}")
        note = self._stderr_note()
        await self.close()
        raise HuddleError(
            f"MCP server {spec.label} did not start within {spec.startup_timeout_s:g}s (no answer to 'initialize' "
            f"and 'tools/list'); raise startup_timeout_s if it is just slow{note}"
        )

    def _check_launchable(self, command: str) -> None:
        """Fail early, in our words, on a missing command or cwd (the SDK would raise a bare FileNotFoundError)."""
        spec = self.spec
        cwd = Path(spec.cwd).expanduser() if spec.cwd else Path.cwd()
        if not cwd.is_dir():
            raise HuddleError(f"MCP server {spec.label}: working directory '{cwd}' does not exist")
        if os.sep in command or (os.altsep and os.altsep in command):
            found = shutil.which(str(cwd / Path(command).expanduser()))
        else:
            found = shutil.which(command, path=spec.env.get("PATH", os.environ.get("PATH", os.defpath)))
        if found is None:
            raise HuddleError(
                f"MCP server {spec.label}: command '{command}' not found"
                + ("" if os.sep in command else " on PATH")
                + "; install it or give its full path in 'command'"
            )

    async def _serve(self, headers: dict[str, str]) -> None:
        """Hold the server's connection open until `_stop` is set; leaving closes it (a stdio server's stdin is
        closed and its process reaped; an HTTP session is ended with a DELETE)."""
        from mcp import ClientSession
        from mcp import types as mcp_types

        async with contextlib.AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(self._transport(stack, headers))
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
            tools: list[mcp_types.Tool] = []
            cursor: str | None = None
            while True:
                listed = await session.list_tools(params=mcp_types.PaginatedRequestParams(cursor=cursor))
                tools.extend(listed.tools)
                cursor = listed.next_cursor
                if not cursor:
                    break
            self.session, self.tools = session, tools
            self._ready.set()
            await self._stop.wait()

    def _transport(
        self, stack: contextlib.AsyncExitStack, headers: dict[str, str]
    ) -> contextlib.AbstractAsyncContextManager[Any]:
        """The SDK's client transport for this spec: stdio (stderr into our temp file) or streamable HTTP."""
        spec = self.spec
        if spec.url is not None:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            # The SDK's own defaults (30 s, reads 300 s: a server may hold a response stream open); ours bound calls.
            client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))
            stack.push_async_callback(client.aclose)
            return streamable_http_client(spec.url, http_client=client)
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        assert spec.command is not None and self._stderr_path is not None
        errlog = stack.enter_context(self._stderr_path.open("a", encoding="utf-8", errors="replace"))
        params = StdioServerParameters(command=spec.command, args=spec.args, env=dict(spec.env), cwd=spec.cwd)
        return stdio_client(params, errlog=errlog)

    async def close(self) -> None:
        """Stop the server and wait for its process to be reaped; raises nothing but our own cancellation.

        A running server is asked to stop (its stdin is closed, then SIGTERM, then SIGKILL); one still starting
        would not notice that before its handshake ends, so it is cancelled straight away.
        """
        self._stop.set()
        task = self._task
        if task is not None and not task.done():
            if not self._ready.is_set():
                task.cancel()
            try:
                # asyncio.wait, not wait_for: the server's own error or cancellation must not look like ours.
                done, _ = await asyncio.wait({task}, timeout=SHUTDOWN_TIMEOUT_S)
                if not done:
                    task.cancel()
                    await asyncio.wait({task}, timeout=SHUTDOWN_TIMEOUT_S)
            except asyncio.CancelledError:
                # We are being cancelled ourselves: cancel the server too; asyncio.run still awaits its clean-up.
                task.cancel()
                raise
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            # The server's own failure, already reported by the calls it broke; retrieved so asyncio does not warn.
            logger.debug("MCP server %s ended with %s", self.spec.label, one_line(task.exception()))
        self.session = None
        if self._stderr_path is not None:
            with contextlib.suppress(OSError):
                self._stderr_path.unlink()
            self._stderr_path = None

    # -- calls --------------------------------------------------------------------------------------------------------

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Call tool `name`; the result's text, or `McpToolError` for an error result or a server that is gone."""
        session = self.session
        if session is None or self._task is None or self._task.done() or self._lost:
            raise McpToolError(f"MCP server {self.spec.label} is not running{self._ended_note()}")
        try:
            # Our own timeout (Tool.timeout_s) cuts the call first; this one only stops a forgotten request lingering.
            result = await session.call_tool(
                name, arguments, read_timeout_seconds=self.spec.timeout_s + SHUTDOWN_TIMEOUT_S
            )
        except Exception as exc:
            if _connection_lost(exc):
                # Remembered, so later calls say so at once instead of each failing in its own obscure way.
                self._lost = True
                raise McpToolError(
                    f"MCP server {self.spec.label} has exited or closed its connection{self._stderr_note()}"
                ) from None
            raise McpToolError(f"MCP server {self.spec.label}: {one_line(exc)}{self._ended_note()}") from None
        text = result_text(result)
        if result.is_error:
            raise McpToolError(text or f"tool '{name}' failed without saying why")
        return text

    def _ended_note(self) -> str:
        """' (it exited: why; its stderr ends: ...)' once the server's connection is gone, else nothing."""
        if self._lost:
            return f" (it exited or closed its connection{self._stderr_note()})"
        task = self._task
        if task is None or not task.done():
            return ""
        exc = None if task.cancelled() else task.exception()
        return f" (it exited: {one_line(exc)}{self._stderr_note()})" if exc else f" (it exited{self._stderr_note()})"

    def _stderr_note(self) -> str:
        """'; stderr: ...' with the last lines the server wrote to stderr, or nothing."""
        if self._stderr_path is None:
            return ""
        try:
            with self._stderr_path.open("rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - _STDERR_TAIL_BYTES))
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()][-_STDERR_TAIL_LINES:]
        return f"; its stderr ends: {' | '.join(lines)}" if lines else ""

    # -- tools --------------------------------------------------------------------------------------------------------

    def make_tools(self) -> list[McpTool]:
        """The server's tools (after the allowlist) as huddle tools; an unknown allowlisted name is a `ConfigError`."""
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import Draft202012Validator, validator_for

        spec = self.spec
        offered = {tool.name: tool for tool in self.tools}
        if spec.tools is not None:
            unknown = [name for name in spec.tools if name not in offered]
            if unknown:
                raise ConfigError(
                    f"MCP server {spec.label} has no tool(s) {', '.join(unknown)}; "
                    f"it offers: {', '.join(offered) or '(none)'}"
                )
            selected = [offered[name] for name in dict.fromkeys(spec.tools)]
        else:
            selected = list(offered.values())
        tools: list[McpTool] = []
        for mcp_tool in selected:
            name = exposed_name(spec, mcp_tool.name)
            schema = input_schema(mcp_tool.input_schema)
            validator_class = validator_for(schema, default=Draft202012Validator)
            try:
                validator_class.check_schema(schema)
            except SchemaError as exc:
                raise HuddleError(
                    f"MCP server {spec.label}: tool '{mcp_tool.name}' has an invalid input schema ({exc.message}); "
                    "leave it out with a 'tools:' allowlist"
                ) from None
            args_model, field_names = carrier_model(name, schema)
            tools.append(
                McpTool(
                    self._caller(mcp_tool.name, field_names, set(schema.get("required") or ())),
                    validator=validator_class(schema),
                    server=spec.label,
                    original_name=mcp_tool.name,
                    name=name,
                    description=mcp_tool.description
                    or f"{mcp_tool.title or mcp_tool.name} (a tool of MCP server {spec.label})",
                    args_model=args_model,
                    side_effects=side_effects_of(mcp_tool, spec.side_effects),
                    timeout_s=spec.timeout_s,
                    # Never retried: a server's tools may have side effects, and a timed-out call may still run.
                    retries=0,
                    max_result_tokens=spec.max_result_tokens,
                )
            )
        return tools

    def _caller(
        self, original: str, field_names: Mapping[str, str], required: set[str]
    ) -> Callable[..., Coroutine[Any, Any, str]]:
        """The function behind one tool: validated fields back to the server's argument names, then the call.

        Optional arguments left unset arrive as None and are not sent (nor is an explicit null for an optional
        argument: for servers the two mean the same, and many reject a null they did not declare).
        """

        async def call(**fields: Any) -> str:
            arguments: dict[str, Any] = dict(fields.pop(EXTRAS_FIELD, None) or {})
            for field_name, value in fields.items():
                key = field_names[field_name]
                if value is not None or key in required:
                    arguments[key] = value
            return await self.call(original, arguments)

        call.__name__ = TOOL_NAME_RE.sub("_", original)
        return call


def _connection_lost(exc: BaseException) -> bool:
    """Whether a call failed because the server's connection is gone (it exited, or closed its stdout)."""
    import anyio
    from mcp import types as mcp_types
    from mcp.shared.exceptions import MCPError

    if isinstance(exc, MCPError):
        return exc.error.code == mcp_types.CONNECTION_CLOSED
    return isinstance(exc, anyio.ClosedResourceError | anyio.BrokenResourceError | anyio.EndOfStream)


def one_line(exc: BaseException | None) -> str:
    """An exception as one line, looking inside anyio's exception groups for the error that matters."""
    # anyio wraps errors in (nested) exception groups; duck-typed because Python 3.10 has no BaseExceptionGroup.
    while exc is not None and isinstance(getattr(exc, "exceptions", None), tuple) and exc.exceptions:  # type: ignore[attr-defined]
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    if exc is None:
        return "unknown error"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
