"""Plugging in your own tools and tool agents: by Python entry point or by ``module:attr`` reference.

Three ways to add a tool, from smallest to largest:

1. a ``@tool`` function referenced from a team YAML: ``tools: [calculator, "my_pkg.tools:lookup_stock"]``;
2. an installed package that declares tools under the entry-point group ``huddle.tools``
   (``[project.entry-points."huddle.tools"] lookup_stock = "my_pkg.tools:lookup_stock"``), then named plainly;
3. a whole tool agent — a class with ``name``, ``description`` and ``tools()`` (optionally ``model``, a profile) —
   referenced as ``{use: "my_pkg.agents:InventoryAgent", name: inventory, config: {...}}`` or declared under the
   ``huddle.agents`` entry-point group and used by its entry-point name. The team runs it as a tool executor with its
   own tools, and the manager and planner read its description. A class that already is an autogen ``ChatAgent``
   joins the team as it is.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from huddle.errors import ConfigError
from huddle.tools import Tool, ToolRegistry

TOOLS_GROUP = "huddle.tools"
AGENTS_GROUP = "huddle.agents"


@runtime_checkable
class ToolAgent(Protocol):
    """A custom tool agent: what the manager reads, and the tools it runs."""

    name: str
    description: str

    def tools(self) -> Sequence[Tool]: ...


def resolve(reference: str, group: str, *, where: str) -> Any:
    """The object a ``module:attr`` reference or an entry-point name (in `group`) points at.

    `where` names the config field for the error message (e.g. ``team.yaml: agents.1.use``).
    """
    if ":" in reference:
        module_name, _, attr = reference.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"{where}: cannot import module {module_name!r} ({exc})") from None
        try:
            obj: Any = module
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{where}: module {module_name!r} has no attribute {attr!r}") from None
        return obj
    found = [ep for ep in entry_points(group=group) if ep.name == reference]
    if not found:
        known = sorted(ep.name for ep in entry_points(group=group))
        raise ConfigError(
            f"{where}: {reference!r} is neither a 'module:attr' reference nor an installed {group} entry point "
            f"(installed: {', '.join(known) or 'none'})"
        )
    try:
        return found[0].load()
    except Exception as exc:  # a broken plugin must not take the CLI down with a traceback
        raise ConfigError(f"{where}: entry point {reference!r} ({found[0].value}) failed to load: {exc}") from None


def load_tools(names: Iterable[str], builtin: ToolRegistry, *, where: str) -> ToolRegistry:
    """The allowlist a member gets: built-in tool names, entry-point tool names and ``module:attr`` references."""
    tools: list[Tool] = []
    for name in names:
        if name in builtin:
            tools.append(builtin.get(name))
            continue
        found = resolve(name, TOOLS_GROUP, where=f"{where}: tool {name!r}")
        items = found if isinstance(found, list | tuple) else [found]
        for item in items:
            if not isinstance(item, Tool):
                raise ConfigError(f"{where}: {name!r} is not a huddle tool (decorate the function with @tool)")
            tools.append(item)
    return ToolRegistry(tools)


def load_agent(reference: str, config: Mapping[str, Any], *, where: str) -> Any:
    """An instance of the custom agent class `reference` points at, built with ``cls(**config)``."""
    target = resolve(reference, AGENTS_GROUP, where=where)
    if not callable(target):
        raise ConfigError(f"{where}: {reference!r} is not a class or factory")
    try:
        return target(**config)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot build {reference!r} with config {dict(config)!r}: {exc}") from None


def installed(group: str) -> list[tuple[str, str]]:
    """Entry points installed in `group`: (name, module:attr)."""
    return sorted((ep.name, ep.value) for ep in entry_points(group=group))
