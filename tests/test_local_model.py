"""The embedded-model client against the real bundled SmolLM2 (no mocks): replies, determinism, JSON-schema output,
streaming, tool history, usage accounting and configuration errors.

Every generation is capped at a few dozen tokens so that the file stays well under a minute on two CPU cores.
"""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Literal

import pytest
from autogen_core import CancellationToken, FunctionCall, Image
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
    validate_model_info,
)
from autogen_core.tools import ToolSchema
from pydantic import BaseModel, Field

from huddle.config.settings import ModelProfile
from huddle.errors import ConfigError
from huddle.models.llama_loading import find_smollm2_gguf, load_llama
from huddle.models.llama_messages import to_llama_messages
from huddle.models.local import REPEAT_PENALTY, LocalChatCompletionClient

pytestmark = pytest.mark.local_model

SHORT = {"max_tokens": 32}
QUESTION: list[LLMMessage] = [
    SystemMessage(content="You are a concise assistant."),
    UserMessage(content="What is 2+2?", source="user"),
]


class City(BaseModel):
    """A small structured answer whose strings are bounded so that constrained decoding ends quickly."""

    name: str = Field(max_length=40)
    country: str = Field(max_length=40)
    size: Literal["small", "medium", "large"]
    population_millions: int


@pytest.fixture
def client() -> LocalChatCompletionClient:
    """A client on the bundled model; the loaded Llama itself is cached process-wide, so this is cheap."""
    return LocalChatCompletionClient(ModelProfile(name="local", provider="local"))


async def test_replies_to_a_simple_question(client: LocalChatCompletionClient) -> None:
    result = await client.create(QUESTION, extra_create_args=SHORT)
    assert isinstance(result.content, str)
    assert result.content.strip()
    assert result.finish_reason in ("stop", "length")
    assert result.cached is False
    assert client.actual_usage() == result.usage
    assert client.total_usage() == result.usage


async def test_temperature_zero_is_deterministic_whatever_ran_before(client: LocalChatCompletionClient) -> None:
    first = await client.create(QUESTION, extra_create_args=SHORT)
    # A different prompt in between must not change the next reply (llama-cpp's prefix cache would, unreset).
    await client.create([UserMessage(content="Name a colour.", source="user")], extra_create_args={"max_tokens": 8})
    second = await client.create(QUESTION, extra_create_args=SHORT)
    assert first.content == second.content
    assert first.usage == second.usage


async def test_usage_equals_what_llama_reports(client: LocalChatCompletionClient) -> None:
    result = await client.create(QUESTION, extra_create_args=SHORT)
    model = client.model
    with model.lock:
        model.llama.reset()  # type: ignore[no-untyped-call]
        raw = model.llama.create_chat_completion(
            to_llama_messages(QUESTION),  # type: ignore[arg-type]
            temperature=0.0,
            max_tokens=SHORT["max_tokens"],
            seed=0,
            repeat_penalty=REPEAT_PENALTY,
        )
    assert isinstance(raw, dict)
    assert result.content == raw["choices"][0]["message"]["content"]
    assert result.usage.prompt_tokens == raw["usage"]["prompt_tokens"]
    assert result.usage.completion_tokens == raw["usage"]["completion_tokens"]
    assert client.count_tokens(QUESTION) == raw["usage"]["prompt_tokens"]
    assert client.remaining_tokens(QUESTION) == 4096 - raw["usage"]["prompt_tokens"]


async def test_json_schema_constrained_output_validates(client: LocalChatCompletionClient) -> None:
    messages: list[LLMMessage] = [
        UserMessage(content="Describe Paris as JSON with name, country, size and population_millions.", source="user")
    ]
    result = await client.create(messages, json_output=City, extra_create_args={"max_tokens": 120})
    assert isinstance(result.content, str)
    city = City.model_validate_json(result.content)
    assert city.size in ("small", "medium", "large")


async def test_stream_yields_chunks_then_the_whole_result(client: LocalChatCompletionClient) -> None:
    chunks: list[str] = []
    final: CreateResult | None = None
    async for item in client.create_stream(QUESTION, extra_create_args=SHORT):
        if isinstance(item, str):
            assert final is None, "no text may follow the CreateResult"
            chunks.append(item)
        else:
            final = item
    assert final is not None
    assert len(chunks) >= 2
    assert final.content == "".join(chunks)
    assert final.usage.prompt_tokens == client.count_tokens(QUESTION)
    assert final.usage.completion_tokens > 0
    # Streaming and non-streaming sample the same tokens at temperature 0.
    assert (await client.create(QUESTION, extra_create_args=SHORT)).content == final.content


async def test_abandoned_or_cancelled_stream_frees_the_model(client: LocalChatCompletionClient) -> None:
    stream = client.create_stream(QUESTION, extra_create_args={"max_tokens": 200})
    assert isinstance(await anext(stream), str)
    await stream.aclose()

    token = CancellationToken()
    with pytest.raises(asyncio.CancelledError):
        async for item in client.create_stream(
            QUESTION, extra_create_args={"max_tokens": 200}, cancellation_token=token
        ):
            assert isinstance(item, str)
            token.cancel()
    # Neither left the worker holding the model's lock.
    result = await asyncio.wait_for(client.create(QUESTION, extra_create_args={"max_tokens": 4}), timeout=20)
    assert result.usage.completion_tokens > 0


async def test_tool_round_trip_in_history_does_not_crash(client: LocalChatCompletionClient) -> None:
    messages: list[LLMMessage] = [
        SystemMessage(content="You are a helpful assistant."),
        UserMessage(content="What is the weather in Paris?", source="user"),
        AssistantMessage(
            content=[FunctionCall(id="1", name="get_weather", arguments='{"city": "Paris"}')], source="assistant"
        ),
        FunctionExecutionResultMessage(
            content=[FunctionExecutionResult(content="Sunny, 21 C", name="get_weather", call_id="1")]
        ),
    ]
    rendered = to_llama_messages(messages)
    assert rendered[2] == {"role": "assistant", "content": 'called get_weather({"city": "Paris"})'}
    assert rendered[3] == {"role": "user", "content": "Tool result (get_weather): Sunny, 21 C"}
    tool: ToolSchema = {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    result = await client.create(messages, tools=[tool], extra_create_args={"max_tokens": 24})
    assert isinstance(result.content, str)
    assert result.content.strip()


def test_missing_model_path_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ConfigError, match="model_path") as caught:
        LocalChatCompletionClient(ModelProfile(name="mine", provider="local", model_path=missing))
    assert str(missing) in str(caught.value)


def test_model_info_is_valid_and_honest(client: LocalChatCompletionClient, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing field would only warn
        validate_model_info(client.model_info)
    assert client.model_info["family"] == "smollm2"
    assert client.model_info["function_calling"] is False
    assert client.model_info["vision"] is False
    assert client.model_info["structured_output"] is True
    custom = tmp_path / "custom.gguf"
    custom.symlink_to(find_smollm2_gguf())
    other = LocalChatCompletionClient(ModelProfile(name="mine", provider="local", model_path=custom))
    assert other.model_info["family"] == "unknown"


async def test_bad_inputs_are_refused_clearly(client: LocalChatCompletionClient) -> None:
    image = Image.from_base64(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    with pytest.raises(ValueError, match="images"):
        await client.create([UserMessage(content=["look", image], source="user")])
    with pytest.raises(ValueError, match="extra_create_args"):
        await client.create(QUESTION, extra_create_args={"logprobs": True})


def test_count_text_uses_the_model_tokenizer(client: LocalChatCompletionClient) -> None:
    assert client.count_text("") == 0
    assert client.count_text("hello") == 1
    assert client.count_text("Hello, world! How are you?") > 3


def test_loading_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    # n_ctx=256 is a cache key no other test uses, so this really loads the model.
    loaded = load_llama(find_smollm2_gguf(), 256)
    assert load_llama(find_smollm2_gguf(), 256) is loaded
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""
