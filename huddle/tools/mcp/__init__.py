"""MCP servers as huddle tools: a team's ``mcp:`` entries reach MCP servers whose tools agents may call.

An entry is either a local process speaking the Model Context Protocol over stdin/stdout (``command:``) or a server
reached over streamable HTTP (``url:``, with optional ``headers:`` whose ``${NAME}`` values come from the
environment, so a token never sits in a team file and is never logged). `open_mcp_tools` starts (or connects to) the
servers, lists their tools and wraps every one as an ordinary huddle `Tool`, so an MCP tool gets exactly what a
Python tool gets: a one-line ``invalid_arguments`` error naming the field, a timeout, a bounded and redacted result,
and an ``ok=False`` result instead of an exception when the server fails or answers with ``is_error`` set. On exit
the servers are shut down (stdin closed, then SIGTERM, then SIGKILL, and reaped; an HTTP session is ended), so no
process outlives the team. `list_mcp_tools` does the same once for ``huddle tools --team``.

The SDK version: ``mcp>=2.3,<3`` only (`MCP_REQUIREMENT`). The reference servers on the package index
(``mcp-server-time``, ``mcp-server-git``) require mcp 2.3, so under the old ``mcp<2`` pin installing one next to
huddle upgraded mcp and broke huddle; with the same requirement as theirs that trap is gone. 1.x is refused with one
error line naming the requirement rather than kept: 2.x renamed every field we read (``is_error``, ``next_cursor``,
``input_schema``, ``mime_type``, ``read_only_hint``...), the error class and the timeout type, and moved the server
API (FastMCP became ``MCPServer``), so keeping 1.x would mean a second set of accessors and a second CI environment
with its own test servers; with one environment the 1.x branch would ship untested.

Why the ``mcp`` SDK's client directly rather than autogen-ext's ``McpWorkbench``: the workbench (autogen-ext 0.7.5)
logs a full traceback whenever a server fails to start, shares one read timeout between start-up and every call,
cannot be stopped while a hung server is still starting, and sends the server's stderr to ours. Here each server
lives in a task we own (so a start-up that hangs is simply cancelled), its stderr is captured so a failed start
reports the server's own last words, and every failure becomes a `HuddleError` or an ``ok=False`` result. Nothing
here imports autogen-ext's MCP module, so the ``mcp`` extra does not install ``autogen-ext[mcp]``.

Argument validation uses the server's JSON schema itself (with ``jsonschema``, which ``mcp`` depends on) rather than
a pydantic model rebuilt from it: a rebuilt model drifts from the schema (formats, ``$ref``, unions, ``null``) and
the server will judge the call by its schema, not by our translation. The schema shown to the model is the server's
too. Two deliberate tightenings: arguments the schema does not declare are rejected unless the schema explicitly
sets ``additionalProperties`` (a misspelt argument is reported, as for Python tools), and values are checked
strictly (``"3"`` is not an integer), since servers in other languages would reject them anyway.

Tool names: a server's tools keep their own names, unless the spec sets ``name``, in which case they become
``<name>__<tool>`` (so two servers that both offer ``search`` can live in one team). Names that clash, between two
servers or with each other, are a `ConfigError` that says to set ``name``; they are never silently renamed.

Side effects: a tool the server annotates ``readOnlyHint`` is ``read``; one annotated ``openWorldHint: false`` is
``write``; anything else is ``external``, which is what the MCP spec tells clients to assume of unannotated tools.
The spec's ``side_effects`` overrides this for all of a server's tools.

The package: `spec` (the ``mcp:`` entry), `adapter` (MCP tools as huddle tools), `server` (one server's transport and
client session) and `launch` (`open_mcp_tools`, `list_mcp_tools`, `servers_key`). Its public names are re-exported here.
"""

from huddle.tools.mcp.adapter import McpTool, McpToolError
from huddle.tools.mcp.launch import MCP_REQUIREMENT, McpListing, list_mcp_tools, open_mcp_tools, servers_key
from huddle.tools.mcp.spec import McpServerSpec

__all__ = [
    "MCP_REQUIREMENT",
    "McpListing",
    "McpServerSpec",
    "McpTool",
    "McpToolError",
    "list_mcp_tools",
    "open_mcp_tools",
    "servers_key",
]
