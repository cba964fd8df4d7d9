"""The tool registry: tools by name, and the per-agent allowlists cut from it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from huddle.errors import HuddleError
from huddle.tools.definition import Tool
from huddle.tools.results import UnknownToolError

if TYPE_CHECKING:
    from autogen_core.tools import BaseTool, ToolSchema
    from pydantic import BaseModel


class ToolRegistry:
    """Tools by name: what a team offers its agents, and (via `subset`) the allowlist each agent actually gets."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.register(item)

    def register(self, tool: Tool) -> Tool:
        """Add `tool`; a second tool with the same name is an error (a model could not tell them apart)."""
        if tool.name in self._tools and self._tools[tool.name] is not tool:
            raise HuddleError(f"a tool named '{tool.name}' is already registered")
        self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool:
        """The tool called `name`; unknown names raise `UnknownToolError` listing the known ones."""
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(f"unknown tool '{name}'; known tools: {self._known()}") from None

    def names(self) -> list[str]:
        """Registered tool names, in registration order."""
        return list(self._tools)

    def schemas(self) -> list[ToolSchema]:
        """Every tool's function schema, in registration order (what a model is offered)."""
        return [t.schema for t in self._tools.values()]

    def subset(self, names: Iterable[str]) -> ToolRegistry:
        """A registry with only `names`, for giving one agent an allowlist; unknown names are an error.

        It is a snapshot: a tool registered here later is not added to it, so an allowlist never grows by itself.
        """
        wanted = list(dict.fromkeys(names))
        missing = [n for n in wanted if n not in self._tools]
        if missing:
            raise HuddleError(f"unknown tool(s): {', '.join(missing)}; known tools: {self._known()}")
        return ToolRegistry(self._tools[n] for n in wanted)

    def as_autogen(self) -> list[BaseTool[BaseModel, BaseModel]]:
        """Every tool as an autogen tool, for ``AssistantAgent(tools=registry.as_autogen())``."""
        return [t.as_autogen() for t in self._tools.values()]

    def _known(self) -> str:
        return ", ".join(self._tools) or "(none)"

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)
