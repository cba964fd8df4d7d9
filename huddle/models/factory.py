"""Profile → metered autogen ``ChatCompletionClient``; the only place the framework creates model clients.

- ``openai``: autogen-ext's ``OpenAIChatCompletionClient`` on any base_url (OpenAI, Azure-compatible gateways,
  Ollama, vLLM, llama.cpp server, LM Studio), streaming with usage included, sending ``X-Huddle-Agent``.
- ``local``: the embedded SmolLM2 model (`huddle.models.local`), needing the ``local`` extra.
- ``scripted``: autogen's ``ReplayChatCompletionClient`` over the profile's ``replies`` (docs, demos, unit tests).
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from autogen_core.models import ChatCompletionClient, CreateResult, LLMMessage, ModelFamily, ModelInfo
from autogen_ext.models.openai import OpenAIChatCompletionClient
from httpx2 import create_ssl_context
from openai import DefaultAsyncHttpxClient

from huddle import secrets
from huddle.config.settings import ModelProfile
from huddle.errors import ConfigError, MissingExtraError
from huddle.models import AGENT_HEADER, plain_body, tokens, usage_details
from huddle.models.metering import MeteredClient, TextCounter
from huddle.models.response_cache import cached
from huddle.usage import UsageLedger
from huddle.usage.budget import Governor

ClientWrapper = Callable[[ChatCompletionClient, ModelProfile, str], ChatCompletionClient]
# For a model autogen does not know (any custom server): what current OpenAI-compatible servers generally support,
# system messages anywhere included (autogen's Memory appends one after the conversation).
_UNKNOWN_MODEL_INFO = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=True,
    structured_output=True,
    family=ModelFamily.UNKNOWN,
    multiple_system_messages=True,
)
_KEYLESS = "not-needed"  # local OpenAI-compatible servers ignore the key, but the openai client insists on one


class _OpenAIClient(OpenAIChatCompletionClient):
    """autogen-ext's client, asking the server for a final usage chunk on every stream (so streamed calls are metered
    from the server too), sending messages and tools without the SDK's per-request walk (`plain_body`), and reading
    the cached and reasoning tokens autogen drops (`usage_details`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        plain_body.install(self._client)
        usage_details.install(self._client)

    def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        extra_create_args: Mapping[str, Any] = {},
        include_usage: bool | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[str | CreateResult, None]:
        if include_usage is None and "stream_options" not in extra_create_args:
            include_usage = True
        return super().create_stream(
            messages, extra_create_args=extra_create_args, include_usage=include_usage, **kwargs
        )


def model_info_for(profile: ModelProfile) -> ModelInfo:
    """autogen's capabilities for a known OpenAI model, sensible defaults otherwise, then the profile's overrides."""
    from autogen_ext.models.openai import _model_info

    info: ModelInfo
    try:
        info = dict(_model_info.get_info(profile.model_name))  # type: ignore[assignment]
    except (ValueError, KeyError):
        info = dict(_UNKNOWN_MODEL_INFO)  # type: ignore[assignment]
    overrides = profile.model_info.model_dump(exclude_none=True)
    return ModelInfo(**(info | overrides))  # type: ignore[typeddict-item,no-any-return]


def _openai_client(profile: ModelProfile, agent: str) -> OpenAIChatCompletionClient:
    key = profile.api_key()
    if key is None and profile.base_url is None:
        raise ConfigError(
            f"profile {profile.name!r}: no API key: set the environment variable {profile.api_key_env} "
            f"(models.{profile.name}.api_key_env), or give models.{profile.name}.base_url for a server without keys"
        )
    args: dict[str, Any] = {
        "model": profile.model_name,
        "api_key": key or _KEYLESS,
        "model_info": model_info_for(profile),
        "timeout": profile.timeout_s,
        "max_retries": 0,  # retried by the metering client, so every attempt is metered (huddle/resilience.py)
        "default_headers": {AGENT_HEADER: agent},
    }
    if profile.base_url:
        args["base_url"] = profile.base_url
    if profile.max_tokens is not None:
        args["max_tokens"] = profile.max_tokens
    if profile.temperature is not None:
        args["temperature"] = profile.temperature
    # The openai client's own default HTTP client, but on the process's one TLS context (see `_tls_context`).
    args["http_client"] = DefaultAsyncHttpxClient(verify=_tls_context())
    return _OpenAIClient(**args)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context (CA bundle, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` as httpx reads them) shared by every client.

    Each HTTP client used to build its own, loading the CA bundle again: most of the ~80 ms a team took to build,
    and a sixth of its memory. An ``SSLContext`` is safe to share between connections, clients and threads; each
    client keeps its own connection pool (pools are tied to the event loop that opened them).
    """
    return create_ssl_context()


def _local_client(profile: ModelProfile) -> ChatCompletionClient:
    try:
        from huddle.models.local import LocalChatCompletionClient
    except ImportError:
        raise MissingExtraError("the embedded model (provider: local)", "local") from None
    return LocalChatCompletionClient(profile)


def _scripted_client(profile: ModelProfile) -> ChatCompletionClient:
    from autogen_ext.models.replay import ReplayChatCompletionClient

    client = ReplayChatCompletionClient(profile.replies, model_info=_UNKNOWN_MODEL_INFO)
    # autogen marks every replayed reply as a cache hit, which the metering bills at 0: a scripted profile is a model
    # like any other here (tokens counted, priced), and only huddle's own response cache makes a reply cached.
    client.set_cached_bool_value(False)
    return client


def _text_counter(profile: ModelProfile, inner: ChatCompletionClient) -> TextCounter:
    own = getattr(inner, "count_text", None)
    if callable(own):
        return own  # type: ignore[no-any-return]
    model = profile.model_name
    return lambda text: tokens.count_text(text, model)


def build_client(
    profile: ModelProfile,
    ledger: UsageLedger,
    *,
    agent: str = "anonymous",
    governor: Governor | None = None,
    profiles: Mapping[str, ModelProfile] | None = None,
    cache_dir: Path | None = None,
    wrap: ClientWrapper | None = None,
) -> MeteredClient:
    """A metered client for `profile` whose calls land in `ledger` as `agent`'s.

    Failed calls are retried (``max_retries``, backoff honouring Retry-After), then go to the profile's ``fallback``
    (looked up in `profiles`), which is also what a budget ``downgrade`` switches to. With a `governor`, every call is
    checked against its budget first. With a `cache_dir`, identical requests are answered from a disk
    cache (autogen's ``ChatCompletionCache``), recorded in the ledger as cached, at no cost. `wrap(client, profile,
    agent)` may put a layer of the caller's between the provider's client and the cache and meter (record/replay).
    """
    tokens.ensure_offline_tiktoken()
    secrets.protect_env(profile.api_key_env, *(other.api_key_env for other in (profiles or {}).values()))
    raw: ChatCompletionClient
    if profile.provider == "openai":
        raw = _openai_client(profile, agent)
    elif profile.provider == "local":
        raw = _local_client(profile)
    else:
        raw = _scripted_client(profile)
    wrapped = wrap(raw, profile, agent) if wrap is not None else raw
    inner = cached(wrapped, profile, cache_dir) if cache_dir is not None else wrapped
    fallback = None
    if profile.fallback and profiles is not None:
        # The next profile in the chain: a budget downgrade, or where a call goes once its retries are spent.
        fallback = build_client(
            profiles[profile.fallback], ledger, agent=agent, profiles=profiles, cache_dir=cache_dir, wrap=wrap
        )
    return MeteredClient(
        inner,
        ledger=ledger,
        profile=profile,
        count_text=_text_counter(profile, raw),
        agent=agent,
        governor=governor,
        fallback=fallback,
    )
