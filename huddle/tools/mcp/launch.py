"""Starting a team's MCP servers together, offering their tools, and stopping them all on exit."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from huddle.errors import ConfigError, HuddleError, MissingExtraError
from huddle.tools.definition import Tool
from huddle.tools.mcp.server import McpServer, one_line
from huddle.tools.mcp.spec import NAME_SEPARATOR, McpServerSpec

# What the `mcp` extra installs: the SDK the reference servers (mcp-server-time, mcp-server-git) need too, so installing
# one of them next to huddle cannot move mcp under our feet. 1.x is refused, not half-supported (see huddle.tools.mcp).
MCP_REQUIREMENT = "mcp>=2.3,<3"
_MCP_RANGE = ((2, 3), (3, 0))


# --------------------------------------------------------------------------------------------------------------------
# Logging and the extra
# --------------------------------------------------------------------------------------------------------------------


class _OneLineLogFilter(logging.Filter):
    """Turns the mcp SDK's logged tracebacks (a server printing non-JSON to stdout) into one warning line.

    Nothing configures logging in huddle, so Python's last-resort handler would print them in full to the user.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {one_line(record.exc_info[1])}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


# The SDK loggers that log exceptions with their tracebacks (a server's stray stdout line, a bad HTTP response).
_SDK_LOGGERS = ("mcp.client.stdio", "mcp.client.streamable_http", "mcp.client.session", "mcp.shared.jsonrpc_dispatcher")


def _quiet_sdk_tracebacks() -> None:
    """Install `_OneLineLogFilter` on the SDK loggers that log exceptions, once."""
    for name in _SDK_LOGGERS:
        sdk_logger = logging.getLogger(name)
        if not any(isinstance(f, _OneLineLogFilter) for f in sdk_logger.filters):
            sdk_logger.addFilter(_OneLineLogFilter())


def _require_mcp() -> None:
    """Raise `MissingExtraError` without the ``mcp`` package, a `HuddleError` for a version outside the requirement."""
    if importlib.util.find_spec("mcp") is None:
        raise MissingExtraError("MCP servers (mcp: in a team)", "mcp")
    try:
        version = importlib.metadata.version("mcp")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    if not _MCP_RANGE[0] <= _release(version) < _MCP_RANGE[1]:
        raise HuddleError(
            f'MCP servers need {MCP_REQUIREMENT}, but mcp {version} is installed: pip install "{MCP_REQUIREMENT}"'
        )
    try:
        import jsonschema  # noqa: F401
        import mcp.client.stdio
        import mcp.client.streamable_http  # noqa: F401
    except ImportError as exc:
        raise HuddleError(
            f'MCP servers need {MCP_REQUIREMENT} ({one_line(exc)}): pip install "{MCP_REQUIREMENT}"'
        ) from None


def _release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string; (0, 0) for one that does not start with two numbers, so it is refused."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


# --------------------------------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------------------------------


def servers_key(specs: Sequence[McpServerSpec]) -> str:
    """One name for a list of servers, the same on every host that reads the same team file (a durable engine's
    worker holds servers open under it, `huddle.effects.held`)."""
    return "mcp:" + json.dumps([spec.model_dump(mode="json") for spec in specs], sort_keys=True)


@asynccontextmanager
async def open_mcp_tools(specs: Sequence[McpServerSpec]) -> AsyncIterator[list[Tool]]:
    """Start every server in `specs`, yield their tools as huddle tools, and stop the servers on exit.

    Servers start concurrently. If any fails to start, the others are stopped and a `HuddleError` names the failing
    command; tool names that clash are a `ConfigError`. Calls after the block has exited fail as ``ok=False``.
    """
    if not specs:
        yield []
        return
    _require_mcp()
    _quiet_sdk_tracebacks()
    servers = [McpServer(spec) for spec in specs]
    try:
        outcomes = await asyncio.gather(*(server.start() for server in servers), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        tools: list[Tool] = []
        owners: dict[str, McpServerSpec] = {}
        for server in servers:
            for mcp_tool in server.make_tools():
                other = owners.get(mcp_tool.name)
                if other is not None:
                    where = "twice by" if other is server.spec else f"by both {other.label} and"
                    raise ConfigError(
                        f"MCP tool name '{mcp_tool.name}' is offered {where} {server.spec.label}; give the servers "
                        f"different 'name:' values (tools become <name>{NAME_SEPARATOR}<tool>) or a 'tools:' allowlist"
                    )
                owners[mcp_tool.name] = server.spec
                tools.append(mcp_tool)
        yield tools
    finally:
        await asyncio.gather(*(server.close() for server in servers))


@dataclass
class McpListing:
    """One server as `huddle tools` shows it: its tools, or the one-line reason it could not be started."""

    spec: McpServerSpec
    tools: list[Tool]
    error: str | None = None


async def list_mcp_tools(specs: Sequence[McpServerSpec]) -> list[McpListing]:
    """Start each server (within its ``startup_timeout_s``), list its tools and stop it again, all concurrently.

    A server that fails is an entry with its error rather than an exception, so the others are still listed.
    """
    if not specs:
        return []
    _require_mcp()

    async def one(spec: McpServerSpec) -> McpListing:
        try:
            async with open_mcp_tools([spec]) as tools:
                return McpListing(spec, tools)
        except HuddleError as exc:
            return McpListing(spec, [], str(exc))

    return list(await asyncio.gather(*(one(spec) for spec in specs)))
