"""The tool core: typed Python functions become tools that a model can call safely.

A model's tool call is untrusted input: its arguments may be malformed JSON, the wrong type or missing, the function
may raise, hang or return megabytes. `Tool.run` turns every one of those into a `ToolResult` (``ok=False`` with a
structured, one-line error the model can act on) instead of an exception that would end the agent's turn, and it
bounds the result's size in tokens so one tool call cannot blow the context window or the budget. Results and logged
arguments pass through `huddle.secrets.redact`, because tool output flows into transcripts, traces and the ledger.

Tools are declared with `@tool` on a typed function; the arguments' JSON schema comes from the type hints and the
docstring (via a pydantic model), so the schema the model sees and the validation we apply cannot drift apart.
`Tool.as_autogen()` adapts a tool to autogen's ``BaseTool`` so an ``AssistantAgent`` can call it with the same
validation, timeout and error handling.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from huddle import tracing
from huddle.errors import HuddleError
from huddle.models.tokens import encoding_for
from huddle.secrets import redact

if TYPE_CHECKING:
    from autogen_core.tools import BaseTool, ToolSchema

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

logger = logging.getLogger("huddle.tools")

SideEffects = Literal["read", "write", "external"]
ErrorKind = Literal["invalid_arguments", "timeout", "exception"]

_SIDE_EFFECTS: tuple[str, ...] = get_args(SideEffects)
# OpenAI's (and most compatible servers') rule for function names; checked at definition time, not at the first call.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Tool output is counted with cl100k_base whatever model reads it: a stable, model-independent budget.
_TOKEN_MODEL = "gpt-4"
# Retries wait RETRY_BACKOFF_S, then twice that, ... capped at RETRY_BACKOFF_MAX_S: enough for a flaky call to recover,
# short enough not to stall a conversation.
RETRY_BACKOFF_S = 0.05
RETRY_BACKOFF_MAX_S = 1.0
# How much of an offending argument value an error message quotes.
_QUOTE_CHARS = 40


# --------------------------------------------------------------------------------------------------------------------
# Errors and results
# --------------------------------------------------------------------------------------------------------------------


class ToolDefinitionError(HuddleError):
    """A function cannot become a tool (bad name, missing hints or description, invalid option); says how to fix it."""

    exit_code = 2


class ToolArgumentsError(HuddleError):
    """A tool call's arguments are invalid; the message is one line naming the tool, the field and what was expected.

    The message is written for a model to read and correct its call, so it never spans lines or dumps a traceback.
    """

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(redact(" ".join(message.split())))
        self.tool = tool


class UnknownToolError(HuddleError, KeyError):
    """A tool name is not in the registry; a `KeyError` too, so mapping-style callers can catch it as one."""

    def __str__(self) -> str:
        # KeyError would repr() the message (adding quotes); show it as written.
        return str(self.args[0]) if self.args else ""


class ToolResult(BaseModel):
    """The outcome of one tool call, success or failure; `content` is what the model is shown.

    On failure `content` is a JSON object ``{"error": <kind>, "message": ...}``, so a model can tell a retryable
    timeout from its own bad arguments; `error` and `error_kind` carry the same for code.
    """

    tool: str
    ok: bool
    content: str
    error: str | None = None
    error_kind: ErrorKind | None = None
    # 0 when the function was never called (invalid arguments).
    attempts: int = 0
    latency_s: float = 0.0
    args: dict[str, Any] = Field(default_factory=dict)
    truncated: bool = False


class ToolCallError(Exception):
    """Raised by the autogen adapter for a failed call, so autogen marks the result ``is_error``.

    Its message is the result's JSON `content`, which is what autogen shows the model.
    """

    def __init__(self, result: ToolResult) -> None:
        super().__init__(result.content)
        self.result = result


# --------------------------------------------------------------------------------------------------------------------
# Docstrings and argument models
# --------------------------------------------------------------------------------------------------------------------

_ARGS_HEADER = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments)\s*:\s*$", re.IGNORECASE)
_SECTION_HEADER = re.compile(r"^[A-Z][A-Za-z ]*:\s*$")
_ARG_ENTRY = re.compile(r"^\*{0,2}(?P<name>\w+)\s*(?:\([^)]*\))?\s*:\s*(?P<text>.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a docstring into its first paragraph (the tool's description) and Google-style per-argument texts.

    Only the first paragraph is used as the description: the rest of a docstring is usually for maintainers, and every
    word of it would be sent to the model on every call.
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    first: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION_HEADER.match(line.strip()):
            break
        first.append(line.strip())
    return " ".join(first), _parse_args_section(lines)


def _parse_args_section(lines: list[str]) -> dict[str, str]:
    """Per-argument descriptions from an ``Args:`` section; continuation lines are indented deeper than entries."""
    found: dict[str, str] = {}
    start = next(
        (i + 1 for i, line in enumerate(lines) if _ARGS_HEADER.match(line.strip()) and not line[:1].isspace()), None
    )
    if start is None:
        return found
    entry_indent: int | None = None
    current: str | None = None
    for line in lines[start:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            break  # the next section (``Returns:``) or prose after the list
        if entry_indent is None:
            entry_indent = indent
        match = _ARG_ENTRY.match(line.strip())
        if indent <= entry_indent and match:
            current = match.group("name")
            found[current] = match.group("text").strip()
        elif indent > entry_indent and current is not None:
            found[current] = f"{found[current]} {line.strip()}".strip()
        else:
            break
    return found


def _has_description(annotation: Any) -> bool:
    """Whether an ``Annotated[..., Field(description=...)]`` already describes the argument (it wins over the doc)."""
    if get_origin(annotation) is not Annotated:
        return False
    return any(isinstance(meta, FieldInfo) and meta.description for meta in get_args(annotation)[1:])


def build_args_model(func: Callable[..., Any], name: str, arg_docs: Mapping[str, str]) -> type[BaseModel]:
    """A pydantic model of `func`'s parameters: the single source of both the JSON schema and argument validation.

    Extra arguments are forbidden (``additionalProperties: false``) so a model's misspelt argument is reported rather
    than silently dropped.
    """
    try:
        hints = get_type_hints(func, include_extras=True)
    except (NameError, TypeError) as exc:
        raise ToolDefinitionError(
            f"tool '{name}': cannot resolve the type hints of {func.__qualname__}: {exc}"
        ) from exc
    fields: dict[str, Any] = {}
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ToolDefinitionError(
                f"tool '{name}': parameter '{param.name}' is {param.kind.description}; tools take named arguments only"
            )
        if param.name.startswith("_"):
            raise ToolDefinitionError(f"tool '{name}': parameter '{param.name}' starts with '_'; rename it")
        if param.name not in hints:
            raise ToolDefinitionError(
                f"tool '{name}': parameter '{param.name}' has no type hint; the schema shown to the model needs one"
            )
        annotation = hints[param.name]
        default = PydanticUndefined if param.default is inspect.Parameter.empty else param.default
        doc = None if _has_description(annotation) else arg_docs.get(param.name)
        # Pass description only when we have one: an explicit None would erase the one inside Annotated[...].
        field = Field(default=default) if doc is None else Field(default=default, description=doc)
        fields[param.name] = (annotation, field)
    model_name = "".join(part.capitalize() for part in re.split(r"[_\-]+", name) if part) + "Args"
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


# --------------------------------------------------------------------------------------------------------------------
# Argument errors, results, redaction, truncation
# --------------------------------------------------------------------------------------------------------------------


def _expected(prop: Mapping[str, Any] | None) -> str:
    """A short name for a JSON-schema property's type (``integer``, ``array of string``, ``one of "a", "b"``)."""
    if not prop:
        return "a value"
    if "enum" in prop:
        return "one of " + ", ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    variants = prop.get("anyOf") or prop.get("oneOf")
    if variants:
        return " or ".join(_expected(v) for v in variants)
    kind = prop.get("type")
    if kind == "array":
        return f"array of {_expected(prop.get('items'))}" if prop.get("items") else "array"
    return str(kind) if kind else "a value"


def _quote(value: Any) -> str:
    """A value as an error message may quote it: JSON, shortened."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 1] + "…"


def _redact_value(value: Any) -> Any:
    """`value` (JSON-like) with every string redacted, so logged and stored arguments never carry a key."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def _raw_args(args: Mapping[str, Any] | str | BaseModel) -> dict[str, Any]:
    """Arguments that failed validation, kept (redacted) on the result for debugging when they are a JSON object."""
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return {}
    if isinstance(args, BaseModel):
        args = args.model_dump(mode="json")
    return _redact_value(args) if isinstance(args, Mapping) else {}


def _to_text(value: Any) -> str:
    """A tool's return value as the text a model reads: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable_python(value, fallback=str), ensure_ascii=False)


def truncate_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """`text` cut to `max_tokens` cl100k tokens plus a note saying how much was dropped; and whether it was cut."""
    # A token is at least one byte, so text this short cannot exceed the limit: skip the tokenizer.
    if len(text.encode("utf-8")) <= max_tokens:
        return text, False
    encoding = encoding_for(_TOKEN_MODEL)
    tokens = encoding.encode(text, disallowed_special=())
    if len(tokens) <= max_tokens:
        return text, False
    # A cut inside a multi-byte character decodes to U+FFFD; drop it rather than show the model garbage.
    head = encoding.decode(tokens[:max_tokens]).rstrip("\ufffd")
    return f"{head}… [truncated: {len(tokens)} tokens, showing {max_tokens}]", True


# --------------------------------------------------------------------------------------------------------------------
# Tool
# --------------------------------------------------------------------------------------------------------------------


class Tool:
    """A typed function a model may call, with its argument model, limits and side-effect class.

    `side_effects` says what a call may do (``read`` nothing outside itself, ``write`` local state, ``external``
    act on the world), so teams can allow only read tools to some agents or ask before ``external`` ones.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str,
        description: str,
        args_model: type[BaseModel],
        side_effects: SideEffects = "read",
        timeout_s: float = 30.0,
        retries: int = 0,
        max_result_tokens: int = 1000,
    ) -> None:
        if not _NAME_RE.match(name):
            raise ToolDefinitionError(f"tool name {name!r} is invalid: use 1-64 letters, digits, '_' or '-'")
        if not description.strip():
            raise ToolDefinitionError(
                f"tool '{name}' has no description: add a docstring or pass description=; the model picks tools by it"
            )
        if side_effects not in _SIDE_EFFECTS:
            raise ToolDefinitionError(f"tool '{name}': side_effects must be one of {', '.join(_SIDE_EFFECTS)}")
        if not timeout_s > 0:
            raise ToolDefinitionError(f"tool '{name}': timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ToolDefinitionError(f"tool '{name}': retries must be >= 0, got {retries}")
        if max_result_tokens < 1:
            raise ToolDefinitionError(f"tool '{name}': max_result_tokens must be >= 1, got {max_result_tokens}")
        self.func = func
        self.name = name
        self.description = description.strip()
        self.args_model = args_model
        self.side_effects: SideEffects = side_effects
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.max_result_tokens = max_result_tokens
        # Also async: an object whose __call__ is a coroutine function (and a partial of one, which inspect handles).
        self._is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)
        self._autogen: BaseTool[BaseModel, BaseModel] | None = None

    @classmethod
    def from_function(
        cls,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        side_effects: SideEffects = "read",
        timeout_s: float = 30.0,
        retries: int = 0,
        max_result_tokens: int = 1000,
    ) -> Tool:
        """Build a tool from `func`'s signature and docstring; explicit `name`/`description` win over the function's."""
        tool_name = name or func.__name__
        summary, arg_docs = parse_docstring(inspect.getdoc(func))
        return cls(
            func,
            name=tool_name,
            description=description if description is not None else summary,
            args_model=build_args_model(func, tool_name, arg_docs),
            side_effects=side_effects,
            timeout_s=timeout_s,
            retries=retries,
            max_result_tokens=max_result_tokens,
        )

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, side_effects={self.side_effects!r}, timeout_s={self.timeout_s})"

    @functools.cached_property
    def schema(self) -> ToolSchema:
        """The autogen/OpenAI function schema: name, description, and parameters with ``required`` and no extras.

        Computed once: the planner lists every tool's schema on each call, and pydantic rebuilds a JSON schema each
        time it is asked (a fiftieth of a turn's CPU).
        """
        # autogen's BaseTool already turns a pydantic model into a ToolSchema (inlining $defs); reuse it.
        return self.as_autogen().schema

    # -- validation ---------------------------------------------------------------------------------------------------

    def validate(self, args: Mapping[str, Any] | str | BaseModel) -> BaseModel:
        """Parse and check a call's arguments (a mapping, or the JSON string a model sends).

        Raises `ToolArgumentsError` with one readable line naming the tool, the field and what was expected.
        """
        if isinstance(args, self.args_model):
            return args
        if isinstance(args, BaseModel):
            args = args.model_dump()
        if isinstance(args, str):
            args = self._parse_json(args)
        if not isinstance(args, Mapping):
            raise ToolArgumentsError(
                self.name,
                f"invalid arguments for tool '{self.name}': expected a JSON object with {self._signature()}, "
                f"got {type(args).__name__}",
            )
        try:
            return self.args_model.model_validate(dict(args))
        except ValidationError as exc:
            raise ToolArgumentsError(self.name, self._describe(exc)) from None

    def _parse_json(self, text: str) -> Any:
        """The JSON in `text`; blank means no arguments (some models send ``""`` for argument-less tools)."""
        if not text.strip():
            return {}
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ToolArgumentsError(
                self.name,
                f"invalid arguments for tool '{self.name}': not valid JSON ({exc.msg} at line {exc.lineno} column "
                f"{exc.colno}); expected a JSON object with {self._signature()}",
            ) from None

    def _properties(self) -> Mapping[str, Any]:
        parameters = self.schema.get("parameters")
        return parameters["properties"] if parameters else {}

    def _signature(self) -> str:
        """The accepted arguments as ``a (integer), b (string, optional)``, for error messages."""
        fields = self.args_model.model_fields
        if not fields:
            return "no fields"
        props = self._properties()
        return ", ".join(
            f"{key} ({_expected(props.get(key))}{'' if info.is_required() else ', optional'})"
            for key, info in fields.items()
        )

    def _describe(self, exc: ValidationError) -> str:
        """One line for all of pydantic's errors: which argument, what was wrong, what was expected."""
        props = self._properties()
        parts: list[str] = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "(arguments)"
            expected = _expected(props.get(str(err["loc"][0]))) if err["loc"] else "an object"
            if err["type"] == "missing":
                parts.append(f"missing required argument '{loc}' (expected {expected})")
            elif err["type"] == "extra_forbidden":
                allowed = ", ".join(self.args_model.model_fields) or "none"
                parts.append(f"unexpected argument '{loc}' (accepted: {allowed})")
            else:
                parts.append(f"argument '{loc}': {err['msg']} (got {_quote(err['input'])}, expected {expected})")
        return f"invalid arguments for tool '{self.name}': " + "; ".join(parts)

    # -- running ------------------------------------------------------------------------------------------------------

    async def run(self, args: Mapping[str, Any] | str | BaseModel) -> ToolResult:
        """Validate and call the tool; never raises for a tool failure, which comes back as ``ok=False`` instead.

        Exceptions and timeouts are retried `retries` times with a short backoff; invalid arguments are not, since
        the same arguments would fail the same way. Sync functions run in a worker thread so they cannot block the
        event loop; on timeout such a thread cannot be killed and finishes in the background. Each call is a
        ``tool`` span in the run's trace.
        """
        began = time.time()
        result = await self._run(args)
        tracing.event(
            f"tool {self.name}",
            "tool",
            start=began,
            error=result.error if not result.ok else None,
            tool=self.name,
            ok=result.ok,
            attempts=result.attempts,
            args=json.dumps(result.args, default=str)[:500],
            truncated=result.truncated,
        )
        return result

    async def _run(self, args: Mapping[str, Any] | str | BaseModel) -> ToolResult:
        started = time.perf_counter()
        try:
            validated = self.validate(args)
        except ToolArgumentsError as exc:
            return self._failure("invalid_arguments", str(exc), 0, started, _raw_args(args))
        kwargs = {key: getattr(validated, key) for key in self.args_model.model_fields}
        logged_args: dict[str, Any] = _redact_value(to_jsonable_python(validated, fallback=str))
        attempts = 0
        while True:
            attempts += 1
            try:
                value = await asyncio.wait_for(self._call(kwargs), self.timeout_s)
            except (asyncio.TimeoutError, TimeoutError):
                kind: ErrorKind = "timeout"
                message = f"tool '{self.name}' did not finish within {self.timeout_s:g}s"
            except Exception as exc:
                kind = "exception"
                message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                return self._success(value, attempts, started, logged_args)
            if attempts > self.retries:
                if attempts > 1:
                    message = f"{message} (after {attempts} attempts)"
                return self._failure(kind, message, attempts, started, logged_args)
            logger.info("tool %s attempt %d failed (%s), retrying: %s", self.name, attempts, kind, redact(message))
            await asyncio.sleep(min(RETRY_BACKOFF_S * 2 ** (attempts - 1), RETRY_BACKOFF_MAX_S))

    def _call(self, kwargs: dict[str, Any]) -> Awaitable[Any]:
        if self._is_async:
            return self.func(**kwargs)  # type: ignore[no-any-return]
        # Copies contextvars into the thread, so usage scopes and tracing still apply inside sync tools.
        return asyncio.to_thread(self.func, **kwargs)

    def _success(self, value: Any, attempts: int, started: float, args: dict[str, Any]) -> ToolResult:
        # Redact before truncating: a cut through a key could leave a prefix too short to be recognised.
        content, truncated = truncate_tokens(redact(_to_text(value)), self.max_result_tokens)
        result = ToolResult(
            tool=self.name,
            ok=True,
            content=content,
            attempts=attempts,
            latency_s=time.perf_counter() - started,
            args=args,
            truncated=truncated,
        )
        logger.debug("tool %s ok attempts=%d latency=%.3fs args=%s", self.name, attempts, result.latency_s, args)
        return result

    def _failure(
        self, kind: ErrorKind, message: str, attempts: int, started: float, args: dict[str, Any]
    ) -> ToolResult:
        message, truncated = truncate_tokens(redact(" ".join(message.split())), self.max_result_tokens)
        result = ToolResult(
            tool=self.name,
            ok=False,
            content=json.dumps({"error": kind, "message": message}, ensure_ascii=False),
            error=message,
            error_kind=kind,
            attempts=attempts,
            latency_s=time.perf_counter() - started,
            args=args,
            truncated=truncated,
        )
        # info, not warning: a failed call is an ordinary turn of a conversation, and the model is told about it.
        logger.info("tool %s failed (%s) attempts=%d args=%s: %s", self.name, kind, attempts, args, message)
        return result

    # -- autogen ------------------------------------------------------------------------------------------------------

    def as_autogen(self) -> BaseTool[BaseModel, BaseModel]:
        """This tool as an autogen ``BaseTool`` (for ``AssistantAgent(tools=[...])``), built once and reused."""
        if self._autogen is None:
            self._autogen = _autogen_adapter(self)
        return self._autogen


def _autogen_adapter(tool: Tool) -> BaseTool[BaseModel, BaseModel]:
    """An autogen tool whose every call goes through `Tool.run` (our validation, timeout, retries and redaction)."""
    # autogen is heavy; import it only when a tool meets an agent.
    from autogen_core import CancellationToken
    from autogen_core.tools import BaseTool

    class HuddleAutogenTool(BaseTool[BaseModel, BaseModel]):
        """Adapter: autogen validates with pydantic and lets exceptions escape; we replace both with `Tool.run`."""

        def __init__(self) -> None:
            super().__init__(tool.args_model, ToolResult, tool.name, tool.description)
            self.huddle_tool = tool

        async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> ToolResult:
            return await tool.run(args)

        async def run_json(
            self, args: Mapping[str, Any], cancellation_token: CancellationToken, call_id: str | None = None
        ) -> ToolResult:
            result = await tool.run(args)
            if not result.ok:
                # autogen turns the exception's text (our JSON error) into an ``is_error`` result for the model.
                raise ToolCallError(result)
            return result

        def return_value_as_string(self, value: Any) -> str:
            return value.content if isinstance(value, ToolResult) else str(value)

    return HuddleAutogenTool()


# --------------------------------------------------------------------------------------------------------------------
# The decorator
# --------------------------------------------------------------------------------------------------------------------


@overload
def tool(func: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = 30.0,
    retries: int = 0,
    side_effects: SideEffects = "read",
    max_result_tokens: int = 1000,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = 30.0,
    retries: int = 0,
    side_effects: SideEffects = "read",
    max_result_tokens: int = 1000,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a typed function (sync or async) into a `Tool`; usable bare (``@tool``) or with options (``@tool(...)``).

    The description is the docstring's first paragraph and per-argument descriptions come from its ``Args:`` section
    (an ``Annotated[..., Field(description=...)]`` wins), so documenting the function documents the tool.
    """

    def decorate(fn: Callable[..., Any]) -> Tool:
        return Tool.from_function(
            fn,
            name=name,
            description=description,
            side_effects=side_effects,
            timeout_s=timeout_s,
            retries=retries,
            max_result_tokens=max_result_tokens,
        )

    return decorate(func) if func is not None else decorate


# --------------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------------


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
