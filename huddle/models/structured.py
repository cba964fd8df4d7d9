"""Asking any client for JSON that matches a pydantic model, in the form that client understands.

autogen's ``json_output=<model>`` on OpenAI-compatible clients goes through the SDK's ``parse``, which raises on a reply
that does not match — and the call's tokens are then lost to the ledger. So for those clients we send the strict JSON
schema as a plain ``response_format`` and parse the reply ourselves; the embedded model takes the pydantic model and
turns it into a grammar; a server without structured output gets JSON mode, or nothing but the prompt.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from autogen_core.models import ChatCompletionClient
from autogen_ext.models.cache import ChatCompletionCache
from autogen_ext.models.openai import OpenAIChatCompletionClient
from pydantic import BaseModel

from huddle.models.metering import MeteredClient


def structured_output_args(client: ChatCompletionClient, model: type[BaseModel]) -> dict[str, Any]:
    """Keyword arguments for ``client.create`` that request JSON matching `model`; parse ``result.content`` yourself."""
    inner: object = client
    # Look through our layers (meter, disk cache, record/replay) to the provider's client.
    while isinstance(inner, MeteredClient | ChatCompletionCache) or hasattr(inner, "inner"):
        inner = inner.client if isinstance(inner, ChatCompletionCache) else inner.inner
    info = client.model_info
    if not isinstance(inner, OpenAIChatCompletionClient):
        return {"json_output": model} if info["json_output"] else {}
    if info.get("structured_output"):
        schema = {"name": model.__name__, "schema": _strict_schema(model), "strict": True}
        return {"extra_create_args": {"response_format": {"type": "json_schema", "json_schema": schema}}}
    return {"json_output": True} if info["json_output"] else {}


@cache
def _strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAI's strict form of the model's JSON schema; built once per model (it costs ~5 ms)."""
    from openai.lib._pydantic import to_strict_json_schema

    return to_strict_json_schema(model)
