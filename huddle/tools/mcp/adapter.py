"""An MCP server's tools as huddle `Tool`s: arguments checked against the server's own JSON schema, results as text,
names and side-effect classes from the server's listing (see `huddle.tools.mcp` for the rules)."""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from huddle.tools.definition import SideEffects, Tool
from huddle.tools.mcp.spec import NAME_SEPARATOR, McpServerSpec
from huddle.tools.results import ToolArgumentsError
from huddle.tools.schema import expected_type, quote_value

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError as SchemaValidationError
    from jsonschema.protocols import Validator
    from mcp import types as mcp_types

# How many schema violations one `invalid_arguments` message lists.
_MAX_REPORTED_ERRORS = 5
# The carrier field for undeclared arguments, present only when a schema explicitly allows them.
EXTRAS_FIELD = "additional_arguments__"
TOOL_NAME_RE = re.compile(r"[^A-Za-z0-9_-]")


class McpToolError(Exception):
    """The server answered a call with an error (``is_error``) or could not be reached; its message is the reason.

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
            fields[EXTRAS_FIELD] = extras
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


def input_schema(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The server's input schema as we validate and show it: an object schema, undeclared arguments forbidden unless
    the server explicitly allows them (so a misspelt argument is an error, not silently ignored)."""
    schema: dict[str, Any] = json.loads(json.dumps(dict(raw)))
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    schema.setdefault("additionalProperties", False)
    return schema


def carrier_model(tool_name: str, schema: Mapping[str, Any]) -> tuple[type[_McpArgs], dict[str, str]]:
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
        field_name = key if safe and key != EXTRAS_FIELD else f"arg{index}_"
        default = ... if key in required else None
        fields[field_name] = (Any, Field(default=default, alias=key))
        names[field_name] = key
    if schema.get("additionalProperties") not in (False, None):
        fields[EXTRAS_FIELD] = (dict[str, Any], Field(default_factory=dict))
    model_name = "".join(part.capitalize() for part in re.split(r"[_\-]+", tool_name) if part) + "McpArgs"
    model = create_model(model_name, __base__=_McpArgs, **fields)
    model.mcp_input_schema = dict(schema)
    return model, names


def side_effects_of(tool: mcp_types.Tool, override: SideEffects | None) -> SideEffects:
    """A tool's side-effect class from its MCP annotations (see `huddle.tools.mcp`), unless the spec overrides it."""
    if override is not None:
        return override
    hints = tool.annotations
    if hints is not None and hints.read_only_hint:
        return "read"
    if hints is not None and hints.open_world_hint is False:
        return "write"
    return "external"


def result_text(result: mcp_types.CallToolResult) -> str:
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
            parts.append(f"[image: {block.mime_type}]")
        elif isinstance(block, mcp_types.AudioContent):
            parts.append(f"[audio: {block.mime_type}]")
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
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(parts)


def exposed_name(spec: McpServerSpec, original: str) -> str:
    """The name the model sees: the server's, made OpenAI-safe, behind the spec's `name` prefix if it has one."""
    safe = TOOL_NAME_RE.sub("_", original) or "tool"
    return (f"{spec.name}{NAME_SEPARATOR}{safe}" if spec.name else safe)[:64]
