"""huddle: managed group chats of specialised LLM agents, steered by token and dollar budgets.

The public API is what this module exports (`__all__`); everything else lives in subpackages. It is kept
import-light on purpose: ``huddle --help`` must stay fast, so each name is imported from its module on first use
(a module ``__getattr__``), and heavy dependencies (autogen, openai, chromadb) only come with the names that need them.

```python
import huddle

print(huddle.run("assistant", "What is 17*23?").answer)
team = huddle.Team.chat("desk", [huddle.planner(), huddle.tool_executor(tools=["calculator"]), huddle.responder()])
```
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from huddle.config.settings import Settings, load_settings
    from huddle.errors import HuddleError
    from huddle.memory.store import VectorMemory
    from huddle.teams.base import RunResult, Team, TeamBusyError, run
    from huddle.teams.spec import AgentSpec, TeamSpec, custom_agent, memory_agent, planner, responder, tool_executor
    from huddle.tools import tool
    from huddle.usage import UsageLedger
    from huddle.usage.budget import Budget, Limit

__version__ = "0.1.0"

_EXPORTS = {
    "Team": "huddle.teams.base",
    "TeamBusyError": "huddle.teams.base",
    "RunResult": "huddle.teams.base",
    "run": "huddle.teams.base",
    "AgentSpec": "huddle.teams.spec",
    "TeamSpec": "huddle.teams.spec",
    "planner": "huddle.teams.spec",
    "tool_executor": "huddle.teams.spec",
    "memory_agent": "huddle.teams.spec",
    "responder": "huddle.teams.spec",
    "custom_agent": "huddle.teams.spec",
    "Budget": "huddle.usage.budget",
    "Limit": "huddle.usage.budget",
    "tool": "huddle.tools",
    "Settings": "huddle.config.settings",
    "load_settings": "huddle.config.settings",
    "UsageLedger": "huddle.usage",
    "VectorMemory": "huddle.memory.store",
    "HuddleError": "huddle.errors",
}
__all__ = [
    "AgentSpec",
    "Budget",
    "HuddleError",
    "Limit",
    "RunResult",
    "Settings",
    "Team",
    "TeamBusyError",
    "TeamSpec",
    "UsageLedger",
    "VectorMemory",
    "custom_agent",
    "load_settings",
    "memory_agent",
    "planner",
    "responder",
    "run",
    "tool",
    "tool_executor",
]  # the keys of _EXPORTS (tests/test_team_api.py checks)


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is used."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'huddle' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
