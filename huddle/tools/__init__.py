"""Tools: typed functions a model may call, the safe built-ins (`builtin`), plugins from entry points (`plugins`) and
tools served by MCP servers (`mcp`).

A tool is defined in `definition` (`Tool`, `@tool`), its argument schema built in `schema`, what a call returns and
the errors it raises in `results`, and the allowlists agents get in `registry`. That contract is re-exported here.
"""

from huddle.tools.definition import SideEffects, Tool, tool
from huddle.tools.registry import ToolRegistry
from huddle.tools.results import (
    ErrorKind,
    ToolArgumentsError,
    ToolCallError,
    ToolDefinitionError,
    ToolResult,
    UnknownToolError,
    truncate_tokens,
)
from huddle.tools.schema import build_args_model, parse_docstring

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
