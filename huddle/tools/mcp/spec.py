"""The ``mcp:`` entry of a team: how to reach one MCP server (a local stdio process or a streamable-HTTP URL) and
which of its tools to offer."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from huddle.errors import HuddleError
from huddle.secrets import redact
from huddle.tools.definition import SideEffects

# Between a server's name and its tool's: `files__read`. Double, so that names with single underscores stay readable.
NAME_SEPARATOR = "__"
# `${NAME}` in a header value: the variable's value, read when the server is reached, so a token never sits in a file.
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Fields that only mean something for one of the two transports.
_STDIO_ONLY = ("args", "env", "cwd")


class McpServerSpec(BaseModel):
    """One entry of a team's ``mcp:`` list: a local stdio server (`command`) or a streamable-HTTP one (`url`)."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = Field(
        default=None, min_length=1, description="Stdio: the executable, a name on PATH or a path (relative to cwd)."
    )
    url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="Streamable HTTP: the server's endpoint, e.g. http://127.0.0.1:8000/mcp (instead of command).",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="HTTP headers sent with every request to `url`; `${NAME}` in a value is the environment "
        "variable NAME, read at connect time. Header values are never logged or shown.",
    )
    args: list[str] = Field(default_factory=list, description="Stdio: the command's arguments.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Stdio: extra environment variables. The server gets only these plus HOME, PATH, USER, SHELL, "
        "TERM and LOGNAME, so API keys in huddle's environment never reach it unless named here.",
    )
    cwd: str | None = Field(default=None, description="Stdio: working directory of the server; None: huddle's own.")
    timeout_s: float = Field(default=30.0, gt=0, description="Limit for each tool call, in seconds.")
    startup_timeout_s: float = Field(
        default=30.0, gt=0, description="Limit for starting (or reaching) the server and listing its tools, in seconds."
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

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("an mcp: entry needs exactly one of 'command' (a stdio server) or 'url' (streamable HTTP)")
        if self.url is not None:
            given = [field for field in _STDIO_ONLY if field in self.model_fields_set]
            if given:
                raise ValueError(f"{', '.join(given)}: only for a stdio server ('command'), not for 'url'")
        elif self.headers:
            raise ValueError("headers: only for a streamable-HTTP server ('url'), not for 'command'")
        return self

    @property
    def command_line(self) -> str:
        """The command and its arguments as one shell-quoted line, or the URL (secrets masked), for messages."""
        if self.command is None:
            return redact(self.url or "")
        return shlex.join([self.command, *self.args])

    @property
    def label(self) -> str:
        """How messages name this server: its name and command line (or URL), or just the command line."""
        return f"'{self.name}' ({self.command_line})" if self.name else f"'{self.command_line}'"

    def resolved_headers(self) -> dict[str, str]:
        """The headers with ``${NAME}`` replaced by the environment's values; an unset one is a `HuddleError`."""
        resolved: dict[str, str] = {}
        for key, template in self.headers.items():
            missing = [name for name in _ENV_REFERENCE.findall(template) if name not in os.environ]
            if missing:
                raise HuddleError(
                    f"MCP server {self.label}: header '{key}' uses ${{{missing[0]}}}, which is not set; "
                    "export it before starting huddle"
                )
            resolved[key] = _ENV_REFERENCE.sub(lambda match: os.environ[match.group(1)], template)
        return resolved

    def with_base_dir(self, base_dir: str | Path) -> McpServerSpec:
        """A stdio spec with `cwd` resolved against `base_dir` (the team file's folder), which is also the default.

        So ``args: [my_server.py]`` next to a team file works wherever huddle is started from. A URL spec is as it is.
        """
        if self.command is None:
            return self
        base = Path(base_dir)
        cwd = base if self.cwd is None else base / Path(self.cwd).expanduser()
        return self.model_copy(update={"cwd": str(cwd)})
