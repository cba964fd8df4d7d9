"""Tools: typed functions a model may call (`core`), the safe built-ins (`builtin`), plugins from entry points
(`plugins`) and tools served by MCP servers (`mcp`).

The tool contract (`Tool`, `tool`, `ToolRegistry`, `ToolResult` and the errors) is re-exported here.
"""

from huddle.tools.core import (
    ErrorKind,
    SideEffects,
    Tool,
    ToolArgumentsError,
    ToolCallError,
    ToolDefinitionError,
    ToolRegistry,
    ToolResult,
    UnknownToolError,
    build_args_model,
    parse_docstring,
    tool,
    truncate_tokens,
)

__all__ = [
    "ErrorKind",
    "SideEffects",
    "Tool",
    "ToolArgumentsError",
    "ToolCallError",
    "ToolDefinitionError",
    "ToolRegistry",
    "ToolResult",
    "UnknownToolError",
    "build_args_model",
    "parse_docstring",
    "tool",
    "truncate_tokens",
]
