"""Load YAML files and validate them with pydantic, reporting errors as ``file:line: field: expected ...``.

Every YAML the user writes (huddle.yaml, team specs, scenarios) goes through `load_model`, so they all fail the same
way: one line naming the file, the line, the field and what was expected, never a traceback. Values of fields that
may hold credentials are not echoed.

A file is bounded before anything walks it: at most `MAX_BYTES` of UTF-8, nested at most `MAX_DEPTH` levels (PyYAML's
composer recurses per level, so a deeper file would end in a `RecursionError`), and at most `MAX_VALUES` values with
its aliases expanded (a few lines of nested aliases, an "alias bomb", expand to billions, which validation would walk).
An alias inside its own anchor (a recursive structure) is refused too: no setting is a cycle.
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

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_VALUES = 100_000


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key and sequence item, within the bounds above."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[Loc, int] = {}
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_DEPTH} levels deep", parent.start_mark if parent else None
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: yaml.Node) -> Any:
        if self._index(node, (), {}, set()) > MAX_VALUES:
            raise yaml.constructor.ConstructorError(
                None, None, f"more than {MAX_VALUES:,} values once its aliases are expanded", node.start_mark
            )
        return super().construct_document(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A scalar PyYAML cannot convert (a date like 2026-13-45, an integer past Python's 4,300 digits) raises a
        bare ValueError without a line; it becomes an error at the value's line and column."""
        try:
            return super().construct_object(node, deep)
        except ValueError as exc:
            problem = str(exc).split(";")[0]  # not Python's advice to raise its digit limit
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {problem}", node.start_mark
            ) from None

    def _index(self, node: yaml.Node, loc: Loc, sizes: dict[int, int], open_nodes: set[int]) -> int:
        """Record the lines under `node` and return how many values it holds with aliases expanded.

        A node reached again through an alias is not walked again (its lines are those of its anchor, and its size
        is remembered), so the walk is linear in the file however the aliases multiply.
        """
        key = id(node)
        if key in open_nodes:
            raise yaml.constructor.ConstructorError(
                None, None, "an alias refers to the anchor it is inside (a recursive structure)", node.start_mark
            )
        if key in sizes:
            return sizes[key]
        self.lines[loc] = node.start_mark.line + 1
        size = 1
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            first_lines: dict[str, int] = {}
            for key_node, value_node in node.value:
                # A list or mapping as a key is refused when the document is constructed ("unhashable key").
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                self._once(key_node, name, first_lines)
                size += self._index(value_node, (*loc, name), sizes, open_nodes)
                self.lines[(*loc, name)] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                size += self._index(item, (*loc, i), sizes, open_nodes)
        open_nodes.discard(key)
        sizes[key] = size
        return size

    @staticmethod
    def _once(key_node: yaml.Node, name: str, first_lines: dict[str, int]) -> None:
        """PyYAML keeps the last of a key given twice; a file pasted twice, or a key set in two places, would then
        lose a setting without a word, so a repeated key is refused (merge keys, ``<<``, may repeat)."""
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            return
        if name in first_lines:
            raise yaml.constructor.ConstructorError(
                None, None, f"{name!r} is given twice (first on line {first_lines[name]})", key_node.start_mark
            )
        first_lines[name] = key_node.start_mark.line + 1


def read_yaml(path: Path) -> tuple[Any, dict[Loc, int]]:
    """Parse `path`; return the data and a map from field location to line number."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_BYTES // 1024} KiB; huddle's YAML files are a few KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        byte = raw[exc.start]
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte {byte:#04x}); save the file as UTF-8") from None
    # PyYAML's reader refuses these in its constructor, before any error of ours could name the line.
    control = yaml.reader.Reader.NON_PRINTABLE.search(text)
    if control:
        line = text.count("\n", 0, control.start()) + 1
        raise ConfigError(f"{path}:{line}: control character {ord(control.group()):#06x} is not allowed in YAML")
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
