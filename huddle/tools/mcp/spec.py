"""The ``mcp:`` entry of a team: how to start one local stdio MCP server and which of its tools to offer."""

from __future__ import annotations

import shlex
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from huddle.tools.definition import SideEffects

# Between a server's name and its tool's: `files__read`. Double, so that names with single underscores stay readable.
NAME_SEPARATOR = "__"


class McpServerSpec(BaseModel):
    """One entry of a team's ``mcp:`` list: how to start a local stdio MCP server and which of its tools to offer."""

    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1, description="The executable: a name on PATH or a path (relative to cwd).")
    args: list[str] = Field(default_factory=list, description="Its command-line arguments.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables. The server gets only these plus HOME, PATH, USER, SHELL, TERM and "
        "LOGNAME, so API keys in huddle's environment never reach it unless named here.",
    )
    cwd: str | None = Field(default=None, description="Working directory of the server; None: huddle's own.")
    timeout_s: float = Field(default=30.0, gt=0, description="Limit for each tool call, in seconds.")
    startup_timeout_s: float = Field(
        default=30.0, gt=0, description="Limit for starting the server and listing its tools, in seconds."
    )
    tools: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Allowlist of the server's tool names (before any prefix); None offers every tool it lists.",
    )
    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description=f"Prefix for this server's tool names (`<name>{NAME_SEPARATOR}<tool>`), to keep two servers' "
        "tools apart; also names the server in messages.",
    )
    side_effects: SideEffects | None = Field(
        default=None, description="Overrides the side-effect class of all this server's tools (see huddle.tools.mcp)."
    )
    max_result_tokens: int = Field(default=1000, ge=1, description="Each result is cut to this many tokens.")

    @property
    def command_line(self) -> str:
        """The command and its arguments as one shell-quoted line, for messages."""
        return shlex.join([self.command, *self.args])

    @property
    def label(self) -> str:
        """How messages name this server: its name and command line, or just the command line."""
        return f"'{self.name}' ({self.command_line})" if self.name else f"'{self.command_line}'"

    def with_base_dir(self, base_dir: str | Path) -> McpServerSpec:
        """This spec with `cwd` resolved against `base_dir` (the team file's folder), which is also the default.

        So ``args: [my_server.py]`` next to a team file works wherever huddle is started from.
        """
        base = Path(base_dir)
        cwd = base if self.cwd is None else base / Path(self.cwd).expanduser()
        return self.model_copy(update={"cwd": str(cwd)})
