"""Replies with anything key-shaped masked, before anything keeps them: the meter (what an agent keeps) and the
response cache (what goes to disk) both mask with `masked`, so the two cannot drift apart."""

from __future__ import annotations

import dataclasses

from autogen_core import FunctionCall
from autogen_core.models import CreateResult

from huddle.secrets import redact


def masked(result: CreateResult) -> CreateResult:
    """The reply with anything key-shaped masked (`redact`), before an agent keeps it: a model repeating a key put it
    in sessions.sqlite unmasked, though traces masked it. The chunks of a stream are shown, not stored."""
    content: str | list[FunctionCall]
    if isinstance(result.content, str):
        content = redact(result.content)
    else:
        content = [dataclasses.replace(call, arguments=redact(call.arguments)) for call in result.content]
    thought = redact(result.thought) if result.thought else result.thought
    if content == result.content and thought == result.thought:
        return result
    return result.model_copy(update={"content": content, "thought": thought})
