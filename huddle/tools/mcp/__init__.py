"""MCP servers as huddle tools: a team's ``mcp:`` entries start local stdio servers whose tools agents may call.

Each server in ``mcp:`` is a local process speaking the Model Context Protocol over stdin/stdout (only stdio, so a
team stays offline: nothing here opens a network connection). `open_mcp_tools` starts the servers, lists their
tools and wraps every one as an ordinary huddle `Tool`, so an MCP tool gets exactly what a Python tool gets: a
one-line ``invalid_arguments`` error naming the field, a timeout, a bounded and redacted result, and an
``ok=False`` result instead of an exception when the server fails. On exit the servers are shut down (stdin closed,
then SIGTERM, then SIGKILL, and reaped), so no process outlives the team.

Why the ``mcp`` SDK's client directly rather than autogen-ext's ``McpWorkbench``: the workbench (autogen-ext 0.7.5)
logs a full traceback whenever a server fails to start, shares one read timeout between start-up and every call,
cannot be stopped while a hung server is still starting, and sends the server's stderr to ours. Here each server
lives in a task we own (so a start-up that hangs is simply cancelled), its stderr is captured so a failed start
reports the server's own last words, and every failure becomes a `HuddleError` or an ``ok=False`` result.

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

The package: `spec` (the ``mcp:`` entry), `adapter` (MCP tools as huddle tools), `server` (one server's process and
client session) and `launch` (`open_mcp_tools`). Its public names are re-exported here.
"""

from huddle.tools.mcp.adapter import McpTool, McpToolError
from huddle.tools.mcp.launch import MCP_REQUIREMENT, open_mcp_tools
from huddle.tools.mcp.spec import McpServerSpec

__all__ = ["MCP_REQUIREMENT", "McpServerSpec", "McpTool", "McpToolError", "open_mcp_tools"]
