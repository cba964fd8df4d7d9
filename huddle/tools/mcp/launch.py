"""Starting a team's MCP servers together, offering their tools, and stopping them all on exit."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from huddle.errors import ConfigError, HuddleError, MissingExtraError
from huddle.tools.definition import Tool
from huddle.tools.mcp.server import McpServer, one_line
from huddle.tools.mcp.spec import NAME_SEPARATOR, McpServerSpec

# What the `mcp` extra installs. mcp 2.x changed its API (FastMCP became MCPServer; autogen-ext 0.7.5's MCP module no
# longer imports with it), and 1.30.0 is the release this package was tested with.
MCP_REQUIREMENT = "mcp>=1.30,<2"


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


def _quiet_sdk_tracebacks() -> None:
    """Install `_OneLineLogFilter` on the SDK loggers that log exceptions, once."""
    for name in ("mcp.client.stdio", "mcp.shared.session", "client"):
        sdk_logger = logging.getLogger(name)
        if not any(isinstance(f, _OneLineLogFilter) for f in sdk_logger.filters):
            sdk_logger.addFilter(_OneLineLogFilter())


def _require_mcp() -> None:
    """Raise `MissingExtraError` without the ``mcp`` package, and a `HuddleError` for an untested major version."""
    if importlib.util.find_spec("mcp") is None:
        raise MissingExtraError("MCP servers (mcp: in a team)", "mcp")
    try:
        version = importlib.metadata.version("mcp")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) >= 2:
        raise HuddleError(
            f'MCP servers need {MCP_REQUIREMENT}, but mcp {version} is installed: pip install "{MCP_REQUIREMENT}"'
        )
    try:
        import jsonschema  # noqa: F401
        import mcp.client.stdio  # noqa: F401
    except ImportError as exc:
        raise HuddleError(
            f'MCP servers need {MCP_REQUIREMENT} ({one_line(exc)}): pip install "{MCP_REQUIREMENT}"'
        ) from None


# --------------------------------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------------------------------


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
