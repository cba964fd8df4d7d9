"""Messages and tools skip the openai SDK's request walk, and the server still receives exactly the same request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import pytest
from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient
from openai._utils._transform import PropertyInfo
from typing_extensions import Required, TypedDict

from huddle.config.settings import ModelProfile
from huddle.models import plain_body
from huddle.models.factory import build_client, model_info_for
from huddle.testing import Reply, Rule, ScriptedServer
from huddle.usage import UsageLedger

CONVERSATION: list[LLMMessage] = [
    SystemMessage(content="You add numbers."),
    UserMessage(content="What is 2 + 3? Ünïcode too.", source="user"),
    AssistantMessage(content=[FunctionCall(id="call_1", name="add", arguments='{"a": 2, "b": 3}')], source="bot"),
    FunctionExecutionResultMessage(content=[FunctionExecutionResult(call_id="call_1", content="5", name="add")]),
]


class Dated(TypedDict, total=False):
    when: Annotated[str, PropertyInfo(format="iso8601")]


class Aliased(TypedDict, total=False):
    card_id: Required[Annotated[str, PropertyInfo(alias="cardID")]]


class Outer(TypedDict, total=False):
    items: list[Dated | str]


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer([Rule(reply=Reply(content="5"))]) as running:
        yield running


def test_the_pinned_sdk_changes_nothing_in_messages_or_tools() -> None:
    # If an openai upgrade adds an alias or a format under these fields, huddle falls back to the SDK's own walk;
    # this test says so instead of letting the speed-up vanish unnoticed.
    assert plain_body.transform_is_identity()


def test_an_alias_or_a_format_anywhere_inside_is_found() -> None:
    assert plain_body.transforms(Aliased)
    assert plain_body.transforms(Outer)
    assert not plain_body.transforms(list[dict[str, object]])


async def test_the_server_receives_the_same_body_as_from_vanilla_autogen(server: ScriptedServer) -> None:
    profile = ModelProfile(name="s", model="scripted", base_url=server.base_url, max_retries=0)
    huddle_client = build_client(profile, UsageLedger(), agent="bot")
    vanilla = OpenAIChatCompletionClient(
        model="scripted", base_url=server.base_url, api_key="not-needed", model_info=model_info_for(profile)
    )
    tools = [FunctionTool(add, description="Add two integers.")]
    extra = {"extra_body": {"top_k": 3}, "temperature": 0.5}
    try:
        for client in (huddle_client, vanilla):
            result = await client.create(CONVERSATION, tools=tools, extra_create_args=extra)
            assert result.content == "5"
    finally:
        await huddle_client.close()
        await vanilla.close()
    ours, theirs = (request.body for request in server.chat_requests)
    assert ours is not None and theirs is not None
    assert list(ours.items()) == list(theirs.items())  # same keys, same order, same values
    assert ours["messages"][1]["content"] == "What is 2 + 3? Ünïcode too."
    assert ours["tools"][0]["function"]["name"] == "add"
    assert ours["top_k"] == 3


async def test_streamed_requests_carry_the_whole_conversation(server: ScriptedServer) -> None:
    profile = ModelProfile(name="s", model="scripted", base_url=server.base_url, max_retries=0)
    client = build_client(profile, UsageLedger(), agent="bot")
    try:
        chunks = [item async for item in client.create_stream(CONVERSATION)]
    finally:
        await client.close()
    assert chunks[-1].content == "5"  # type: ignore[union-attr]
    (request,) = server.chat_requests
    assert request.stream
    assert [m["role"] for m in request.messages] == ["system", "user", "assistant", "tool"]
