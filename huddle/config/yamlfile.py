"""Load YAML files and validate them with pydantic, reporting errors as ``file:line: field: expected ...``.

Every YAML the user writes (huddle.yaml, team specs, scenarios) goes through `load_model`, so they all fail the same
way: one line naming the file, the line, the field and what was expected, never a traceback. Values of fields that
may hold credentials are not echoed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from huddle.errors import ConfigError
from huddle.secrets import looks_secret

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key and sequence item."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[Loc, int] = {}

    def construct_document(self, node: yaml.Node) -> Any:
        self._index(node, ())
        return super().construct_document(node)

    def _index(self, node: yaml.Node, loc: Loc) -> None:
        self.lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                self._index(value_node, (*loc, key))
                self.lines[(*loc, key)] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._index(item, (*loc, i))


def read_yaml(path: Path) -> tuple[Any, dict[Loc, int]]:
    """Parse `path`; return the data and a map from field location to line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    loader = _LineLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return data, loader.lines


def describe_validation_error(exc: ValidationError, source: str, lines: dict[Loc, int] | None = None) -> str:
    """Turn a pydantic error into one line per problem: ``source:line: field.path: message (got value)``."""
    problems = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = _nearest_line(loc, lines or {})
        where = f"{source}:{line}" if line else source
        message = err["msg"]
        value = err.get("input")
        if err["type"] not in ("missing", "extra_forbidden") and not isinstance(value, dict | list):
            shown = "***" if looks_secret(str(loc[-1]) if loc else "", value) else repr(value)
            message = f"{message} (got {shown})"
        if err["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see README 'Configuration')"
        problems.append(f"{where}: {field}: {message}")
    return "; ".join(problems)


def _nearest_line(loc: Loc, lines: dict[Loc, int]) -> int | None:
    """The line of the deepest part of `loc` that exists in the file (a missing field points at its parent)."""
    for depth in range(len(loc), -1, -1):
        if loc[:depth] in lines:
            return lines[loc[:depth]]
    return None


def load_model(path: Path, model: type[M], *, context: dict[str, Any] | None = None) -> M:
    """Read `path` and validate it as `model`; raise `ConfigError` with file, line and field on any problem."""
    data, lines = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping of settings at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, str(path), lines)) from None
