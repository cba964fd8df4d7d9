"""The tool: a typed Python function that a model can call safely, and the `@tool` decorator that makes one.

A model's tool call is untrusted input: its arguments may be malformed JSON, the wrong type or missing, the function
may raise, hang or return megabytes. `Tool.run` turns every one of those into a `ToolResult` (``ok=False`` with a
structured, one-line error the model can act on) instead of an exception that would end the agent's turn, and it
bounds the result's size in tokens so one tool call cannot blow the context window or the budget (`results`). The
argument model and the schema the model sees come from the function's hints and docstring (`schema`); exceptions and
timeouts are retried by the one retry helper (`huddle.resilience.retrying`). `Tool.as_autogen()` adapts a tool to
autogen's ``BaseTool`` so an ``AssistantAgent`` can call it with the same validation, timeout and error handling.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args, overload

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from huddle import effects, tracing
from huddle.resilience import MAX_RETRIES, RetryPolicy, retrying
from huddle.secrets import redact
from huddle.tools.results import (
    ErrorKind,
    ToolArgumentsError,
    ToolCallError,
    ToolDefinitionError,
    ToolResult,
    raw_args,
    redact_value,
    to_text,
    truncate_tokens,
)
from huddle.tools.schema import build_args_model, expected_type, parse_docstring, quote_value

if TYPE_CHECKING:
    from autogen_core.tools import BaseTool, ToolSchema

logger = logging.getLogger("huddle.tools")

SideEffects = Literal["read", "write", "external"]

_SIDE_EFFECTS: tuple[str, ...] = get_args(SideEffects)
# OpenAI's (and most compatible servers') rule for function names; checked at definition time, not at the first call.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Retries wait RETRY_BACKOFF_S, then twice that, ... capped at RETRY_BACKOFF_MAX_S: enough for a flaky call to recover,
# short enough not to stall a conversation.
RETRY_BACKOFF_S = 0.05
RETRY_BACKOFF_MAX_S = 1.0


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
        if not 0 <= retries <= MAX_RETRIES:
            raise ToolDefinitionError(f"tool '{name}': retries must be between 0 and {MAX_RETRIES}, got {retries}")
        if max_result_tokens < 1:
            raise ToolDefinitionError(f"tool '{name}': max_result_tokens must be >= 1, got {max_result_tokens}")
        self.func = func
        self.name = name
        self.description = description.strip()
        self.args_model = args_model
        self.side_effects: SideEffects = side_effects
        self.timeout_s = float(timeout_s)
        self.retries = retries
        # Bounded in total by the attempts' own timeouts and the capped waits between them.
        self._retry_policy = RetryPolicy(
            max_retries=retries,
            base_delay_s=RETRY_BACKOFF_S,
            max_delay_s=RETRY_BACKOFF_MAX_S,
            max_total_s=(retries + 1) * self.timeout_s + retries * RETRY_BACKOFF_MAX_S,
            jitter=0,
        )
        self.max_result_tokens = max_result_tokens
        # Also async: an object whose __call__ is a coroutine function (and a partial of one, which inspect handles).
        self._is_async = effects.is_async(func)
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
            f"{key} ({expected_type(props.get(key))}{'' if info.is_required() else ', optional'})"
            for key, info in fields.items()
        )

    def _describe(self, exc: ValidationError) -> str:
        """One line for all of pydantic's errors: which argument, what was wrong, what was expected."""
        props = self._properties()
        parts: list[str] = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "(arguments)"
            expected = expected_type(props.get(str(err["loc"][0]))) if err["loc"] else "an object"
            if err["type"] == "missing":
                parts.append(f"missing required argument '{loc}' (expected {expected})")
            elif err["type"] == "extra_forbidden":
                allowed = ", ".join(self.args_model.model_fields) or "none"
                parts.append(f"unexpected argument '{loc}' (accepted: {allowed})")
            else:
                parts.append(f"argument '{loc}': {err['msg']} (got {quote_value(err['input'])}, expected {expected})")
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
            tracing.span_name("tool", self.name),
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
            return self._failure("invalid_arguments", str(exc), 0, started, raw_args(args))
        kwargs = {key: getattr(validated, key) for key in self.args_model.model_fields}
        logged_args: dict[str, Any] = redact_value(to_jsonable_python(validated, fallback=str))
        attempts = 0

        async def attempt() -> str:
            nonlocal attempts
            attempts += 1
            return await asyncio.wait_for(self._call(kwargs), self.timeout_s)

        try:
            text: str = await retrying(self._retry_policy, retry_on=_is_failure, on_retry=self._log_retry)(attempt)
        except Exception as exc:
            kind, message = self._failure_of(exc)
            if attempts > 1:
                message = f"{message} (after {attempts} attempts)"
            return self._failure(kind, message, attempts, started, logged_args)
        return self._success(text, attempts, started, logged_args)

    def _failure_of(self, exc: BaseException) -> tuple[ErrorKind, str]:
        """A failed attempt's kind and one-line message, as the model is told it."""
        if isinstance(exc, asyncio.TimeoutError | TimeoutError):
            return "timeout", f"tool '{self.name}' did not finish within {self.timeout_s:g}s"
        return "exception", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def _log_retry(self, attempt: int, exc: BaseException, delay: float) -> None:
        kind, message = self._failure_of(exc)
        logger.info("tool %s attempt %d failed (%s), retrying: %s", self.name, attempt, kind, redact(message))

    def _call(self, kwargs: dict[str, Any]) -> Awaitable[str]:
        """One attempt, whose value comes back as the masked text the model reads: what a durable engine records of
        the call (a workflow's history) holds no key either. Inside a workflow it is a recorded step: on the worker's
        own loop for an async tool (its I/O), in a thread otherwise (contextvars copied, so usage scopes and tracing
        still apply)."""
        if self._is_async:
            return effects.step(self._text_async, kwargs)
        return effects.offload(self._text, kwargs)

    def _text(self, kwargs: dict[str, Any]) -> str:
        return redact(to_text(self.func(**kwargs)))

    async def _text_async(self, kwargs: dict[str, Any]) -> str:
        return redact(to_text(await self.func(**kwargs)))

    def _success(self, text: str, attempts: int, started: float, args: dict[str, Any]) -> ToolResult:
        # Redacted before truncating (`_call`): a cut through a key could leave a prefix too short to be recognised.
        content, truncated = truncate_tokens(text, self.max_result_tokens)
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


def _is_failure(exc: BaseException) -> bool:
    """Whether a tool's attempt failed in a way worth retrying: any exception or timeout, never a cancellation."""
    return isinstance(exc, Exception)


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
