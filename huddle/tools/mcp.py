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
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import keyword
import logging
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from huddle.errors import ConfigError, HuddleError, MissingExtraError
from huddle.tools.definition import SideEffects, Tool
from huddle.tools.results import ToolArgumentsError
from huddle.tools.schema import expected_type, quote_value

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError as SchemaValidationError
    from jsonschema.protocols import Validator
    from mcp import ClientSession
    from mcp import types as mcp_types

__all__ = ["MCP_REQUIREMENT", "McpServerSpec", "McpTool", "McpToolError", "open_mcp_tools"]

logger = logging.getLogger("huddle.tools.mcp")

# What the `mcp` extra installs. mcp 2.x changed its API (FastMCP became MCPServer; autogen-ext 0.7.5's MCP module no
# longer imports with it), and 1.30.0 is the release this module was tested with.
MCP_REQUIREMENT = "mcp>=1.30,<2"
# Between a server's name and its tool's: `files__read`. Double, so that names with single underscores stay readable.
NAME_SEPARATOR = "__"
# After closing a server's stdin the SDK waits 2 s, then SIGTERMs, waits 2 s more and SIGKILLs; past this much more we
# cancel the server's task outright rather than hang the exit.
SHUTDOWN_TIMEOUT_S = 10.0
# How much of a failed server's stderr an error message quotes (its last lines usually say what went wrong).
_STDERR_TAIL_LINES = 3
_STDERR_TAIL_BYTES = 4096
# How many schema violations one `invalid_arguments` message lists.
_MAX_REPORTED_ERRORS = 5
# The carrier field for undeclared arguments, present only when a schema explicitly allows them.
_EXTRAS_FIELD = "additional_arguments__"
_TOOL_NAME_RE = re.compile(r"[^A-Za-z0-9_-]")


# --------------------------------------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------------------------------------


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
        default=None, description="Overrides the side-effect class of all this server's tools (see the module doc)."
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


# --------------------------------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------------------------------


class McpToolError(Exception):
    """The server answered a call with an error (``isError``) or could not be reached; its message is the reason.

    `Tool.run` turns it into an ``ok=False`` result of kind ``exception`` that the model reads.
    """


class _McpArgs(BaseModel):
    """Base of the per-tool argument carriers: the JSON schema it reports is the server's, not one derived from it.

    `Tool` reads a tool's schema from its args model (``model_json_schema``) and passes the validated fields to its
    function; validation itself is done against the server's schema in `McpTool.validate`, so the fields are `Any`.
    """

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True, protected_namespaces=())
    mcp_input_schema: ClassVar[dict[str, Any]] = {}

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The server's input schema (a copy), which is what the model is shown."""
        copy: dict[str, Any] = json.loads(json.dumps(cls.mcp_input_schema))
        return copy


class McpTool(Tool):
    """A `Tool` whose calls go to an MCP server and whose arguments are checked against the server's JSON schema.

    Only `validate` differs from `Tool`: the schema is the server's, so pydantic cannot check it, and jsonschema's
    errors are rewritten into the same one-line ``invalid_arguments`` messages Python tools give.
    """

    def __init__(
        self,
        func: Callable[..., Coroutine[Any, Any, str]],
        *,
        validator: Validator,
        server: str,
        original_name: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(func, **kwargs)
        self.validator = validator
        self.server = server
        self.original_name = original_name

    def validate(self, args: Mapping[str, Any] | str | BaseModel) -> BaseModel:
        """Parse `args` and check them against the server's input schema; raises `ToolArgumentsError` (one line)."""
        if isinstance(args, self.args_model):
            return args
        if isinstance(args, BaseModel):
            args = args.model_dump(mode="json", by_alias=True)
        if isinstance(args, str):
            args = self._parse_json(args)
        if not isinstance(args, Mapping):
            raise ToolArgumentsError(
                self.name,
                f"invalid arguments for tool '{self.name}': expected a JSON object, got {type(args).__name__}",
            )
        # A null optional argument means "not given" (models often send one for every optional argument), so it is
        # neither checked against the argument's type nor sent.
        required = set(self.validator.schema.get("required") or ())
        payload = {key: value for key, value in args.items() if value is not None or key in required}
        errors = sorted(self.validator.iter_errors(payload), key=lambda e: [str(p) for p in e.absolute_path])
        if errors:
            parts = list(dict.fromkeys(part for error in errors for part in self._explain(error)))
            if len(parts) > _MAX_REPORTED_ERRORS:
                parts = [*parts[:_MAX_REPORTED_ERRORS], f"and {len(parts) - _MAX_REPORTED_ERRORS} more"]
            raise ToolArgumentsError(self.name, f"invalid arguments for tool '{self.name}': " + "; ".join(parts))
        declared = set(self.validator.schema.get("properties") or ())
        extras = {key: value for key, value in payload.items() if key not in declared}
        fields = {key: value for key, value in payload.items() if key in declared}
        if extras:  # only reached when the schema allows undeclared arguments
            fields[_EXTRAS_FIELD] = extras
        return self.args_model.model_validate(fields)

    def _explain(self, error: SchemaValidationError) -> list[str]:
        """One or more message parts for one jsonschema error, in the wording of `Tool`'s own messages."""
        path = [str(p) for p in error.absolute_path]
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        properties: Mapping[str, Any] = schema.get("properties") or {}
        instance = error.instance
        if error.validator == "required" and isinstance(instance, Mapping):
            return [
                f"missing required argument '{'.'.join([*path, str(key)])}' "
                f"(expected {expected_type(properties.get(key))})"
                for key in error.validator_value
                if key not in instance
            ]
        if error.validator == "additionalProperties" and isinstance(instance, Mapping):
            patterns = list(schema.get("patternProperties") or {})
            allowed = ", ".join(properties) or "none"
            return [
                f"unexpected argument '{'.'.join([*path, str(key)])}' (accepted: {allowed})"
                for key in instance
                if key not in properties and not any(re.search(p, str(key)) for p in patterns)
            ]
        loc = ".".join(path) or "(arguments)"
        if error.validator == "type":
            reason = f"wrong type ({_json_type(instance)})"
        elif error.validator in ("enum", "const"):
            reason = "not an allowed value"
        elif len(error.message) <= 100:
            reason = error.message
        else:
            reason = f"fails {error.validator}={quote_value(error.validator_value)}"
        return [f"argument '{loc}': {reason} (got {quote_value(instance)}, expected {expected_type(schema)})"]


def _json_type(value: Any) -> str:
    """The JSON type name of a Python value parsed from JSON, for 'wrong type' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, Mapping) else type(value).__name__


def _input_schema(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The server's input schema as we validate and show it: an object schema, undeclared arguments forbidden unless
    the server explicitly allows them (so a misspelt argument is an error, not silently ignored)."""
    schema: dict[str, Any] = json.loads(json.dumps(dict(raw)))
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    schema.setdefault("additionalProperties", False)
    return schema


def _args_model(tool_name: str, schema: Mapping[str, Any]) -> tuple[type[_McpArgs], dict[str, str]]:
    """A carrier model with one `Any` field per declared argument, and the map from its field names to argument names.

    Argument names that cannot be pydantic field names (``_private``, ``model_x``, ``json``, ``my-arg``) get a
    placeholder field name with the real name as alias, so logged arguments still show the real names.
    """
    required = set(schema.get("required") or ())
    fields: dict[str, Any] = {}
    names: dict[str, str] = {}
    for index, key in enumerate(schema["properties"]):
        safe = (
            key.isidentifier()
            and not keyword.iskeyword(key)
            and not key.startswith(("_", "model_"))
            and not hasattr(BaseModel, key)
        )
        field_name = key if safe and key != _EXTRAS_FIELD else f"arg{index}_"
        default = ... if key in required else None
        fields[field_name] = (Any, Field(default=default, alias=key))
        names[field_name] = key
    if schema.get("additionalProperties") not in (False, None):
        fields[_EXTRAS_FIELD] = (dict[str, Any], Field(default_factory=dict))
    model_name = "".join(part.capitalize() for part in re.split(r"[_\-]+", tool_name) if part) + "McpArgs"
    model = create_model(model_name, __base__=_McpArgs, **fields)
    model.mcp_input_schema = dict(schema)
    return model, names


def _side_effects(tool: mcp_types.Tool, override: SideEffects | None) -> SideEffects:
    """A tool's side-effect class from its MCP annotations (module doc), unless the spec overrides it."""
    if override is not None:
        return override
    hints = tool.annotations
    if hints is not None and hints.readOnlyHint:
        return "read"
    if hints is not None and hints.openWorldHint is False:
        return "write"
    return "external"


def _result_text(result: mcp_types.CallToolResult) -> str:
    """A call's result as the text a model reads: text blocks as they are, other blocks as short placeholders.

    Structured content is used only when there are no content blocks, since servers send it alongside an equivalent
    text block and repeating it would double the tokens.
    """
    from mcp import types as mcp_types

    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.ImageContent):
            parts.append(f"[image: {block.mimeType}]")
        elif isinstance(block, mcp_types.AudioContent):
            parts.append(f"[audio: {block.mimeType}]")
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, mcp_types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[resource: {resource.uri}]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource link: {block.uri}]")
        else:  # a block type newer than this code
            parts.append(json.dumps(block.model_dump(mode="json"), ensure_ascii=False))
    if not parts and result.structuredContent is not None:
        return json.dumps(result.structuredContent, ensure_ascii=False)
    return "\n".join(parts)


def _exposed_name(spec: McpServerSpec, original: str) -> str:
    """The name the model sees: the server's, made OpenAI-safe, behind the spec's `name` prefix if it has one."""
    safe = _TOOL_NAME_RE.sub("_", original) or "tool"
    return (f"{spec.name}{NAME_SEPARATOR}{safe}" if spec.name else safe)[:64]


# --------------------------------------------------------------------------------------------------------------------
# One server
# --------------------------------------------------------------------------------------------------------------------


class _McpServer:
    """One running server: a task that holds its stdio connection and session open until `close` is called.

    The SDK's transport uses anyio cancel scopes that must be entered and left in one task, so the connection lives
    in its own task (`_serve`) rather than in the caller's; calls are plain requests on the session from any task.
    """

    def __init__(self, spec: McpServerSpec) -> None:
        self.spec = spec
        self.session: ClientSession | None = None
        self.tools: list[mcp_types.Tool] = []
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stderr_path: Path | None = None
        self._lost = False

    # -- lifecycle ----------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the server and list its tools; a failure or a hang is a `HuddleError` naming the command."""
        spec = self.spec
        self._check_launchable()
        fd, path = tempfile.mkstemp(prefix="huddle-mcp-", suffix=".stderr")
        os.close(fd)
        self._stderr_path = Path(path)
        self._task = asyncio.create_task(self._serve(), name=f"mcp server {spec.command_line}")
        ready = asyncio.create_task(self._ready.wait())
        try:
            await asyncio.wait({self._task, ready}, timeout=spec.startup_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._ready.is_set():
            return
        if self._task.done():
            exc = None if self._task.cancelled() else self._task.exception()
            reason = _one_line(exc) if exc is not None else "it exited"
            raise HuddleError(f"MCP server {spec.label} failed to start: {reason}{self._stderr_note()}")
        note = self._stderr_note()
        await self.close()
        raise HuddleError(
            f"MCP server {spec.label} did not start within {spec.startup_timeout_s:g}s (no answer to 'initialize' "
            f"and 'tools/list'); raise startup_timeout_s if it is just slow{note}"
        )

    def _check_launchable(self) -> None:
        """Fail early, in our words, on a missing command or cwd (the SDK would raise a bare FileNotFoundError)."""
        spec = self.spec
        cwd = Path(spec.cwd).expanduser() if spec.cwd else Path.cwd()
        if not cwd.is_dir():
            raise HuddleError(f"MCP server {spec.label}: working directory '{cwd}' does not exist")
        if os.sep in spec.command or (os.altsep and os.altsep in spec.command):
            found = shutil.which(str(cwd / Path(spec.command).expanduser()))
        else:
            found = shutil.which(spec.command, path=spec.env.get("PATH", os.environ.get("PATH", os.defpath)))
        if found is None:
            raise HuddleError(
                f"MCP server {spec.label}: command '{spec.command}' not found"
                + ("" if os.sep in spec.command else " on PATH")
                + "; install it or give its full path in 'command'"
            )

    async def _serve(self) -> None:
        """Hold the server's connection open until `_stop` is set; leaving closes stdin and reaps the process."""
        from mcp import ClientSession, StdioServerParameters
        from mcp import types as mcp_types
        from mcp.client.stdio import stdio_client

        spec = self.spec
        assert self._stderr_path is not None
        params = StdioServerParameters(command=spec.command, args=spec.args, env=dict(spec.env), cwd=spec.cwd)
        with self._stderr_path.open("a", encoding="utf-8", errors="replace") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                tools: list[mcp_types.Tool] = []
                cursor: str | None = None
                while True:
                    listed = await session.list_tools(params=mcp_types.PaginatedRequestParams(cursor=cursor))
                    tools.extend(listed.tools)
                    cursor = listed.nextCursor
                    if not cursor:
                        break
                self.session, self.tools = session, tools
                self._ready.set()
                await self._stop.wait()

    async def close(self) -> None:
        """Stop the server and wait for its process to be reaped; raises nothing but our own cancellation.

        A running server is asked to stop (its stdin is closed, then SIGTERM, then SIGKILL); one still starting
        would not notice that before its handshake ends, so it is cancelled straight away.
        """
        self._stop.set()
        task = self._task
        if task is not None and not task.done():
            if not self._ready.is_set():
                task.cancel()
            try:
                # asyncio.wait, not wait_for: the server's own error or cancellation must not look like ours.
                done, _ = await asyncio.wait({task}, timeout=SHUTDOWN_TIMEOUT_S)
                if not done:
                    task.cancel()
                    await asyncio.wait({task}, timeout=SHUTDOWN_TIMEOUT_S)
            except asyncio.CancelledError:
                # We are being cancelled ourselves: cancel the server too; asyncio.run still awaits its clean-up.
                task.cancel()
                raise
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            # The server's own failure, already reported by the calls it broke; retrieved so asyncio does not warn.
            logger.debug("MCP server %s ended with %s", self.spec.label, _one_line(task.exception()))
        self.session = None
        if self._stderr_path is not None:
            with contextlib.suppress(OSError):
                self._stderr_path.unlink()
            self._stderr_path = None

    # -- calls --------------------------------------------------------------------------------------------------------

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Call tool `name`; the result's text, or `McpToolError` for an error result or a server that is gone."""
        session = self.session
        if session is None or self._task is None or self._task.done() or self._lost:
            raise McpToolError(f"MCP server {self.spec.label} is not running{self._ended_note()}")
        try:
            # Our own timeout (Tool.timeout_s) cuts the call first; this one only stops a forgotten request lingering.
            result = await session.call_tool(
                name, arguments, read_timeout_seconds=timedelta(seconds=self.spec.timeout_s + SHUTDOWN_TIMEOUT_S)
            )
        except Exception as exc:
            if _connection_lost(exc):
                # Remembered, so later calls say so at once instead of each failing in its own obscure way.
                self._lost = True
                raise McpToolError(
                    f"MCP server {self.spec.label} has exited or closed its connection{self._stderr_note()}"
                ) from None
            raise McpToolError(f"MCP server {self.spec.label}: {_one_line(exc)}{self._ended_note()}") from None
        text = _result_text(result)
        if result.isError:
            raise McpToolError(text or f"tool '{name}' failed without saying why")
        return text

    def _ended_note(self) -> str:
        """' (it exited: why; its stderr ends: ...)' once the server's connection is gone, else nothing."""
        if self._lost:
            return f" (it exited or closed its connection{self._stderr_note()})"
        task = self._task
        if task is None or not task.done():
            return ""
        exc = None if task.cancelled() else task.exception()
        return f" (it exited: {_one_line(exc)}{self._stderr_note()})" if exc else f" (it exited{self._stderr_note()})"

    def _stderr_note(self) -> str:
        """'; stderr: ...' with the last lines the server wrote to stderr, or nothing."""
        if self._stderr_path is None:
            return ""
        try:
            with self._stderr_path.open("rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - _STDERR_TAIL_BYTES))
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()][-_STDERR_TAIL_LINES:]
        return f"; its stderr ends: {' | '.join(lines)}" if lines else ""

    # -- tools --------------------------------------------------------------------------------------------------------

    def make_tools(self) -> list[McpTool]:
        """The server's tools (after the allowlist) as huddle tools; an unknown allowlisted name is a `ConfigError`."""
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import Draft202012Validator, validator_for

        spec = self.spec
        offered = {tool.name: tool for tool in self.tools}
        if spec.tools is not None:
            unknown = [name for name in spec.tools if name not in offered]
            if unknown:
                raise ConfigError(
                    f"MCP server {spec.label} has no tool(s) {', '.join(unknown)}; "
                    f"it offers: {', '.join(offered) or '(none)'}"
                )
            selected = [offered[name] for name in dict.fromkeys(spec.tools)]
        else:
            selected = list(offered.values())
        tools: list[McpTool] = []
        for mcp_tool in selected:
            name = _exposed_name(spec, mcp_tool.name)
            schema = _input_schema(mcp_tool.inputSchema)
            validator_class = validator_for(schema, default=Draft202012Validator)
            try:
                validator_class.check_schema(schema)
            except SchemaError as exc:
                raise HuddleError(
                    f"MCP server {spec.label}: tool '{mcp_tool.name}' has an invalid input schema ({exc.message}); "
                    "leave it out with a 'tools:' allowlist"
                ) from None
            args_model, field_names = _args_model(name, schema)
            tools.append(
                McpTool(
                    self._caller(mcp_tool.name, field_names, set(schema.get("required") or ())),
                    validator=validator_class(schema),
                    server=spec.label,
                    original_name=mcp_tool.name,
                    name=name,
                    description=mcp_tool.description
                    or f"{mcp_tool.title or mcp_tool.name} (a tool of MCP server {spec.label})",
                    args_model=args_model,
                    side_effects=_side_effects(mcp_tool, spec.side_effects),
                    timeout_s=spec.timeout_s,
                    # Never retried: a server's tools may have side effects, and a timed-out call may still run.
                    retries=0,
                    max_result_tokens=spec.max_result_tokens,
                )
            )
        return tools

    def _caller(
        self, original: str, field_names: Mapping[str, str], required: set[str]
    ) -> Callable[..., Coroutine[Any, Any, str]]:
        """The function behind one tool: validated fields back to the server's argument names, then the call.

        Optional arguments left unset arrive as None and are not sent (nor is an explicit null for an optional
        argument: for servers the two mean the same, and many reject a null they did not declare).
        """

        async def call(**fields: Any) -> str:
            arguments: dict[str, Any] = dict(fields.pop(_EXTRAS_FIELD, None) or {})
            for field_name, value in fields.items():
                key = field_names[field_name]
                if value is not None or key in required:
                    arguments[key] = value
            return await self.call(original, arguments)

        call.__name__ = _TOOL_NAME_RE.sub("_", original)
        return call


def _connection_lost(exc: BaseException) -> bool:
    """Whether a call failed because the server's connection is gone (it exited, or closed its stdout)."""
    import anyio
    from mcp import types as mcp_types
    from mcp.shared.exceptions import McpError

    if isinstance(exc, McpError):
        return exc.error.code == mcp_types.CONNECTION_CLOSED
    return isinstance(exc, anyio.ClosedResourceError | anyio.BrokenResourceError | anyio.EndOfStream)


def _one_line(exc: BaseException | None) -> str:
    """An exception as one line, looking inside anyio's exception groups for the error that matters."""
    # anyio wraps errors in (nested) exception groups; duck-typed because Python 3.10 has no BaseExceptionGroup.
    while exc is not None and isinstance(getattr(exc, "exceptions", None), tuple) and exc.exceptions:  # type: ignore[attr-defined]
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    if exc is None:
        return "unknown error"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------------------------
# Logging and the extra
# --------------------------------------------------------------------------------------------------------------------


class _OneLineLogFilter(logging.Filter):
    """Turns the mcp SDK's logged tracebacks (a server printing non-JSON to stdout) into one warning line.

    Nothing configures logging in huddle, so Python's last-resort handler would print them in full to the user.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {_one_line(record.exc_info[1])}"
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
            f'MCP servers need {MCP_REQUIREMENT} ({_one_line(exc)}): pip install "{MCP_REQUIREMENT}"'
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
    servers = [_McpServer(spec) for spec in specs]
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
