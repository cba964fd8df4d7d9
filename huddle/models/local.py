"""The embedded model: an autogen ``ChatCompletionClient`` that runs a GGUF (by default the bundled SmolLM2) in-process.

We do not use autogen-ext's ``LlamaCppChatCompletionClient``: in 0.7.5 its ``create`` ignores ``json_output``,
temperature and max_tokens, it cannot stream, it hard-codes ``model_info``, and it raises on a
``FunctionExecutionResultMessage``, so any conversation that ever ran a tool crashes it. This client talks to
``llama_cpp.Llama`` directly instead.

Design points, each for a reason:

* One shared ``Llama`` per file and parameters, with its lock (`huddle.models.llama_loading`).
* Generation runs in a worker thread so the event loop keeps serving other agents while the model computes.
* Before every generation the context is ``reset()``. llama-cpp-python otherwise reuses the cached KV prefix of the
  previous call, and evaluating the same prompt in differently sized batches changes floating-point rounding enough
  that greedy decoding picks different tokens (observed with SmolLM2: the first and second identical calls
  differed). Resetting makes a temperature-0 reply a function of its messages alone, whatever ran before; re-reading
  the prompt costs little next to decoding.
* SmolLM2 has no tool-call format, so tools are never sent to it (``function_calling`` is False in `model_info`, and
  autogen agents then pass none); histories are converted by `huddle.models.llama_messages`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from huddle.config.settings import ModelProfile
from huddle.errors import ConfigError
from huddle.models.llama_loading import SEED, LoadedModel, find_smollm2_gguf, load_llama, require_llama_cpp
from huddle.models.llama_messages import ChatMessage, finish_reason, response_format, to_llama_messages

if TYPE_CHECKING:
    from llama_cpp.llama_types import ChatCompletionRequestMessage

__all__ = ["DEFAULT_MAX_TOKENS", "REPEAT_PENALTY", "LocalChatCompletionClient"]

REPEAT_PENALTY = 1.1
DEFAULT_MAX_TOKENS = 512
_PER_MESSAGE_OVERHEAD = 5
"""Estimate for templates we cannot render ourselves: ChatML's ``<|im_start|>role\\n … <|im_end|>\\n`` is 5 tokens."""
_REPLY_PRIMER = 3
"""Estimate of the generation prompt (``<|im_start|>assistant\\n``) for templates we cannot render ourselves."""
_OVERRIDABLE = frozenset(
    {
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "stop",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
    }
)
"""``extra_create_args`` keys passed through to llama-cpp; anything else is refused rather than silently dropped."""


class _Stream:
    """Items a streaming worker thread hands to the event loop."""

    @dataclass
    class Text:
        text: str

    @dataclass
    class Done:
        finish_reason: str | None

    @dataclass
    class Failed:
        error: BaseException

    @dataclass
    class Cancelled:
        pass


_StreamItem = _Stream.Text | _Stream.Done | _Stream.Failed | _Stream.Cancelled


class LocalChatCompletionClient(ChatCompletionClient):
    """Runs a GGUF in-process with llama.cpp: the bundled SmolLM2-135M by default, or a profile's ``model_path``.

    The model loads lazily on first use (and once per process, shared between clients), so building a client is cheap
    and a profile that is configured but never used costs nothing.
    """

    def __init__(self, profile: ModelProfile) -> None:
        require_llama_cpp()
        if profile.model_path is not None:
            path = profile.model_path.expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"profile {profile.name or '(unnamed)'!r}: model_path {str(profile.model_path)!r} does not exist "
                    "or is not a file; point it at a GGUF file, or remove it to use the bundled SmolLM2"
                )
            self._path = path.resolve()
            self._bundled = False
        else:
            self._path = find_smollm2_gguf()
            self._bundled = True
        self._profile = profile
        self._n_ctx = profile.n_ctx
        self._temperature = profile.temperature if profile.temperature is not None else 0.0
        self._max_tokens = profile.max_tokens or DEFAULT_MAX_TOKENS
        family = profile.model_info.family or ("smollm2" if self._bundled else "unknown")
        self._model_info = ModelInfo(
            vision=False,
            function_calling=False,
            json_output=True,
            structured_output=True,
            family=family,
            multiple_system_messages=False,
        )
        self._actual_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)

    # -- the shared model ------------------------------------------------------------------------------------------

    @property
    def model_path(self) -> Path:
        """The GGUF this client runs."""
        return self._path

    @property
    def model(self) -> LoadedModel:
        """The shared, lazily loaded model. Hold ``model.lock`` around any use of ``model.llama`` besides tokenizing."""
        return load_llama(self._path, self._n_ctx, extra_buffers=self._profile.extra_buffers)

    def _request(
        self,
        messages: Sequence[LLMMessage],
        json_output: bool | type[BaseModel] | None,
        extra_create_args: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Keyword arguments for ``create_chat_completion``; validates everything before any thread is started."""
        unknown = set(extra_create_args) - _OVERRIDABLE
        if unknown:
            raise ValueError(
                f"the local model does not accept extra_create_args {sorted(unknown)}; allowed: {sorted(_OVERRIDABLE)}"
            )
        request: dict[str, Any] = {
            "messages": to_llama_messages(messages),
            "temperature": self._temperature,
            "max_tokens": self._max_tokens,
            "seed": SEED,
            # Greedy decoding of a 135M model loops on its own sentences; a mild penalty (llama.cpp's own CLI
            # default) keeps answers from repeating until max_tokens.
            "repeat_penalty": REPEAT_PENALTY,
        }
        constraint = response_format(json_output)
        if constraint is not None:
            request["response_format"] = constraint
        request.update(extra_create_args)
        return request

    def _record(self, usage: RequestUsage) -> None:
        for total in (self._actual_usage, self._total_usage):
            total.prompt_tokens += usage.prompt_tokens
            total.completion_tokens += usage.completion_tokens

    # -- ChatCompletionClient --------------------------------------------------------------------------------------

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """One reply. ``tools``/``tool_choice`` are ignored: the model cannot call tools, so it answers in text.

        Cancelling returns to the caller at once; the llama call already under way runs to its end (bounded by
        ``max_tokens``) in its thread, because llama-cpp offers no way to interrupt a non-streaming call.
        """
        request = self._request(messages, json_output, extra_create_args)
        cancelled = threading.Event()

        def generate() -> dict[str, Any]:
            model = self.model
            with model.lock:
                if cancelled.is_set():
                    raise asyncio.CancelledError
                model.llama.reset()  # type: ignore[no-untyped-call]  # see the module docstring: determinism
                return cast(dict[str, Any], model.llama.create_chat_completion(**request))

        future = asyncio.ensure_future(asyncio.to_thread(generate))
        if cancellation_token is not None:
            cancellation_token.add_callback(cancelled.set)
            cancellation_token.link_future(future)
        response = await future
        choice = response["choices"][0]
        usage = RequestUsage(
            prompt_tokens=response["usage"]["prompt_tokens"], completion_tokens=response["usage"]["completion_tokens"]
        )
        self._record(usage)
        return CreateResult(
            finish_reason=finish_reason(choice.get("finish_reason")),
            content=choice["message"].get("content") or "",
            usage=usage,
            cached=False,
        )

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Stream text chunks as llama.cpp produces them, then one `CreateResult` with the whole text and usage.

        llama-cpp reports no usage when streaming, so the final usage is computed: prompt tokens by rendering the
        prompt with the GGUF's chat template and tokenizing it exactly as llama-cpp does (so it equals what a
        non-streaming call reports), and completion tokens by tokenizing the generated text with the model's own
        tokenizer (equal to the sampled count unless the text re-tokenizes differently, which is rare).
        Stopping iteration early, or cancelling, stops generation at the next token and frees the model.
        """
        request = self._request(messages, json_output, extra_create_args)
        llama_messages: list[ChatMessage] = request["messages"]
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_StreamItem] = asyncio.Queue()
        stop = threading.Event()

        def put(item: _StreamItem) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                stop.set()

        def generate() -> None:
            try:
                model = self.model
                with model.lock:
                    if stop.is_set():
                        return
                    model.llama.reset()  # type: ignore[no-untyped-call]  # see the module docstring: determinism
                    chunks = cast(Iterator[dict[str, Any]], model.llama.create_chat_completion(**request, stream=True))
                    finish: str | None = None
                    try:
                        for chunk in chunks:
                            if stop.is_set():
                                return
                            choice = chunk["choices"][0]
                            text = choice["delta"].get("content")
                            if text:
                                put(_Stream.Text(text))
                            finish = choice.get("finish_reason") or finish
                    finally:
                        close = getattr(chunks, "close", None)
                        if close is not None:
                            close()
                put(_Stream.Done(finish))
            except BaseException as error:
                put(_Stream.Failed(error))

        def on_cancel() -> None:
            stop.set()
            put(_Stream.Cancelled())

        if cancellation_token is not None:
            cancellation_token.add_callback(on_cancel)
        worker = loop.run_in_executor(None, generate)
        pieces: list[str] = []
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Stream.Text):
                    pieces.append(item.text)
                    yield item.text
                elif isinstance(item, _Stream.Failed):
                    raise item.error
                elif isinstance(item, _Stream.Cancelled):
                    raise asyncio.CancelledError
                else:
                    content = "".join(pieces)
                    usage = RequestUsage(
                        prompt_tokens=self._count_prompt(llama_messages), completion_tokens=self.count_text(content)
                    )
                    self._record(usage)
                    yield CreateResult(
                        finish_reason=finish_reason(item.finish_reason), content=content, usage=usage, cached=False
                    )
                    break
        finally:
            stop.set()  # an abandoned stream must not keep generating while holding the model's lock
            if worker.done() and not worker.cancelled():
                worker.exception()  # retrieve it, so asyncio does not log "exception was never retrieved"

    async def close(self) -> None:
        """Nothing to release: the loaded model is shared process-wide and stays cached for other clients."""

    def actual_usage(self) -> RequestUsage:
        """Tokens used by this client so far."""
        return RequestUsage(self._actual_usage.prompt_tokens, self._actual_usage.completion_tokens)

    def total_usage(self) -> RequestUsage:
        """Same as `actual_usage`: nothing is served from a cache, so every call counts."""
        return RequestUsage(self._total_usage.prompt_tokens, self._total_usage.completion_tokens)

    def count_text(self, text: str) -> int:
        """Tokens in `text` by the model's own tokenizer (no BOS, special-token text counted as plain text).

        Tokenizing reads only the vocabulary, which llama.cpp never mutates, so it needs no lock and does not wait
        for a generation in progress.
        """
        if not text:
            return 0
        return len(self.model.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _count_prompt(self, llama_messages: list[ChatMessage]) -> int:
        """Prompt tokens for these messages: exact when we can render the chat template, else a close estimate."""
        model = self.model
        if model.formatter is not None:
            rendered = model.formatter(messages=cast("list[ChatCompletionRequestMessage]", llama_messages))
            tokens = model.llama.tokenize(
                rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
            )
            return len(tokens)
        return _REPLY_PRIMER + sum(self.count_text(m["content"]) + _PER_MESSAGE_OVERHEAD for m in llama_messages)

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Prompt tokens these messages would take. Tools count nothing, because they are never sent to the model."""
        return self._count_prompt(to_llama_messages(messages))

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Room left in the llama.cpp context (``n_ctx``) after these messages, for the reply."""
        return self._n_ctx - self.count_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:
        """Deprecated autogen API, still abstract in 0.7.5; the same facts as `model_info`."""
        return cast(ModelCapabilities, self._model_info)

    @property
    def model_info(self) -> ModelInfo:
        """No vision or tool calling; JSON mode and JSON-schema structured output via llama.cpp grammars."""
        return self._model_info
