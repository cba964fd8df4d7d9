"""From a typed Python function to the schema a model sees: docstring parsing and the pydantic argument model.

The arguments' JSON schema comes from the type hints and the docstring via one pydantic model, so the schema the
model sees and the validation we apply cannot drift apart. The helpers that name a schema's types and quote values
are shared with MCP tools (`huddle.tools.mcp`), so both kinds of tool word their argument errors alike.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from huddle.tools.results import ToolDefinitionError

# How much of an offending argument value an error message quotes.
_QUOTE_CHARS = 40

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


def expected_type(prop: Mapping[str, Any] | None) -> str:
    """A short name for a JSON-schema property's type (``integer``, ``array of string``, ``one of "a", "b"``)."""
    if not prop:
        return "a value"
    if "enum" in prop:
        return "one of " + ", ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    variants = prop.get("anyOf") or prop.get("oneOf")
    if variants:
        return " or ".join(expected_type(v) for v in variants)
    kind = prop.get("type")
    if kind == "array":
        return f"array of {expected_type(prop.get('items'))}" if prop.get("items") else "array"
    return str(kind) if kind else "a value"


def quote_value(value: Any) -> str:
    """A value as an error message may quote it: JSON, shortened."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 1] + "…"
