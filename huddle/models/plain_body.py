"""Hand autogen's chat-completion ``messages`` and ``tools`` to the openai SDK as they are, past its per-request walk.

Why: before every request the SDK walks the whole body against its ``TypedDict`` annotations (``async_maybe_transform``)
to rename aliased keys and format dates or files. For chat completions that walk changes nothing, yet it costs
0.36 ms for a two-message request and 1.8 ms for eleven messages and one tool on these machines (measured: a fifth
of a pipeline turn's client CPU), and it grows with every message of a conversation.

How: ``messages`` and ``tools`` travel in ``extra_body``, which the SDK merges into the transformed body without
walking it; a placeholder ``[]`` keeps each key where the SDK puts it, so the bytes on the wire are the same as before
(``tests/test_plain_body.py`` compares them). This is used only while the installed SDK's annotations for these
fields carry no alias or format (`transform_is_identity`, checked once): an SDK that adds one gets its own path back.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, Any, get_args, get_origin

from openai._utils._transform import PropertyInfo, get_type_hints
from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from typing_extensions import is_typeddict  # typing's own misses the SDK's typing_extensions TypedDicts

PASSED_AS_IS = ("messages", "tools")
"""The fields that grow with the conversation and the toolset; the SDK still walks every other field."""


@functools.cache
def transform_is_identity() -> bool:
    """Whether the SDK's request transform leaves the `PASSED_AS_IS` fields unchanged: no key alias and no format
    anywhere in their annotations (nested message, content part and tool types included)."""
    hints = get_type_hints(CompletionCreateParamsBase, include_extras=True)
    return not any(transforms(hints[field]) for field in PASSED_AS_IS)


def transforms(annotation: Any, seen: set[int] | None = None) -> bool:
    """Whether the SDK's transform may change data of this annotation (an alias or a format somewhere inside)."""
    seen = set() if seen is None else seen
    if id(annotation) in seen:
        return False
    seen.add(id(annotation))
    metadata = getattr(annotation, "__metadata__", ()) if get_origin(annotation) is Annotated else ()
    if any(isinstance(m, PropertyInfo) and (m.alias or m.format) for m in metadata):
        return True
    if is_typeddict(annotation):
        nested = get_type_hints(annotation, include_extras=True).values()
        return any(transforms(hint, seen) for hint in nested)
    return any(transforms(arg, seen) for arg in get_args(annotation))


class PlainBodyCompletions:
    """Stands in for an ``AsyncOpenAI`` client's ``chat.completions``: ``create`` sends ``messages`` and ``tools``
    through ``extra_body``; everything else (``parse``, ``stream``, ...) is the SDK's own."""

    def __init__(self, completions: Any) -> None:
        self._completions = completions

    async def create(self, **kwargs: Any) -> Any:
        as_is = {field: kwargs[field] for field in PASSED_AS_IS if isinstance(kwargs.get(field), list)}
        if as_is:
            extra: Mapping[str, Any] = kwargs.get("extra_body") or {}
            kwargs["extra_body"] = {**as_is, **extra}  # a caller's own extra_body still has the last word
            kwargs.update({field: [] for field in as_is})  # required or positioned by the SDK; replaced by the merge
        return await self._completions.create(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._completions, name)


def install(client: Any) -> None:
    """Route `client` 's (an ``AsyncOpenAI``) chat completions through `PlainBodyCompletions` where that is safe."""
    if transform_is_identity():
        client.chat.completions = PlainBodyCompletions(client.chat.completions)
