"""Settings: profile selection, precedence, and config errors that name file, line and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from huddle.config.settings import load_settings
from huddle.errors import ConfigError
from huddle.models.pricing import Priced, price_call


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_without_config_or_key_the_embedded_model_is_used() -> None:
    profile = load_settings().profile()
    assert (profile.name, profile.provider, profile.model_name) == ("local", "local", "SmolLM2-135M-Instruct")
    assert price_call(profile, 1_000_000, 1_000_000) == Priced(0.0, 0.0, "free")


def test_with_openai_key_default_profile_talks_to_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    profile = load_settings().profile()
    assert (profile.name, profile.model_name, profile.base_url) == ("default", "gpt-4o-mini", "http://127.0.0.1:9/v1")
    # No hand-typed price: the table's for the model asked for (gpt-4o-mini: $0.15 in, $0.60 out per MTok).
    assert profile.price is None and price_call(profile, 1_000_000, 1_000_000).cost_usd == pytest.approx(0.75)
    # default:gpt-4o was charged gpt-4o-mini's price; the table prices gpt-4o ($2.50 in, $10 out per MTok).
    gpt4o = load_settings(model="default:gpt-4o").profile()
    assert price_call(gpt4o, 1_000_000, 1_000_000) == Priced(12.5, 0.0, "table")


def test_model_flag_takes_a_profile_name_or_a_model_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    assert load_settings(model="local").profile().name == "local"
    chosen = load_settings(model="gpt-4o").profile()
    assert (chosen.name, chosen.model_name) == ("default", "gpt-4o")
    monkeypatch.setenv("HUDDLE_MODEL", "llama3.2")
    assert load_settings().profile().model_name == "llama3.2"


def test_a_typo_of_a_profile_is_refused_but_a_deliberate_model_name_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    write(tmp_path / "huddle.yaml", "models:\n  ollama: {base_url: 'http://127.0.0.1:11434/v1'}\n")
    for typo, meant in (("locl", "local"), ("Local", "local"), ("defualt", "default"), ("olama", "ollama")):
        with pytest.raises(ConfigError) as info:
            load_settings(model=typo).profile()
        assert f"unknown profile {typo!r}; did you mean {meant!r}?" in str(info.value)
        assert f"PROFILE:MODEL, e.g. default:{typo}" in str(info.value) and info.value.exit_code == 2
    monkeypatch.setenv("HUDDLE_MODEL", "locl")
    with pytest.raises(ConfigError, match="did you mean 'local'"):
        load_settings().profile()
    monkeypatch.delenv("HUDDLE_MODEL")
    chosen = {
        choice: (p.name, p.model_name, p.base_url)
        for choice in ("default:locl", "ollama:qwen2.5:7b", "gpt-4o", "llama3.2", "qwen2.5:7b")
        for p in [load_settings(model=choice).profile()]
    }
    assert chosen == {
        "default:locl": ("default", "locl", None),
        "ollama:qwen2.5:7b": ("ollama", "qwen2.5:7b", "http://127.0.0.1:11434/v1"),
        "gpt-4o": ("default", "gpt-4o", None),
        "llama3.2": ("default", "llama3.2", None),
        "qwen2.5:7b": ("default", "qwen2.5:7b", None),
    }
    with pytest.raises(ConfigError, match=r"profile 'local' .*only 'openai' profiles take a model name"):
        load_settings(model="local:other").profile()


def test_config_file_profiles_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path / "huddle.yaml",
        """
model: cheap
models:
  cheap: {provider: openai, model: qwen2.5, base_url: "http://127.0.0.1:11434/v1", api_key_env: OLLAMA_KEY,
          price: {input_per_mtok: 0.1, output_per_mtok: 0.2}, fallback: local,
          model_info: {function_calling: false}}
""",
    )
    settings = load_settings()
    assert settings.config_file == tmp_path / "huddle.yaml"
    cheap = settings.profile()
    assert (cheap.name, cheap.model_name, cheap.fallback, cheap.context_window) == ("cheap", "qwen2.5", "local", 128000)
    assert "local" in settings.profiles and "default" in settings.profiles
    monkeypatch.setenv("HUDDLE_MODELS__CHEAP__MODEL", "qwen3")
    assert load_settings().profile().model_name == "qwen3"
    monkeypatch.setenv("HUDDLE_MODEL", "local")
    assert load_settings().profile().name == "local"
    assert load_settings(model="cheap").profile().name == "cheap"


def test_data_dir_from_env_and_flag(tmp_path: Path) -> None:
    assert load_settings().data_dir == tmp_path / "huddle-home"
    assert load_settings(data_dir=tmp_path / "x").data_dir == tmp_path / "x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "models:\n  default:\n    provider: opnai\n",
            "huddle.yaml:3: models.default.provider: Input should be 'openai'",
        ),
        ("models:\n  a:\n    price:\n      input_per_mtok: -2\n", "huddle.yaml:4: models.a.price.input_per_mtok"),
        (
            "models:\n  a: {provider: local, fallback: nope}\n",
            "huddle.yaml:2: models.a.fallback: unknown profile 'nope'",
        ),
        ("modles: {}\n", "huddle.yaml:1: modles: unknown field"),
        ("models: [1, 2\n", "huddle.yaml:2:1: invalid YAML"),
        ("- just\n- a list\n", "huddle.yaml:1: expected a mapping"),
        ("models:\n  s: {provider: scripted}\n", "huddle.yaml:2: models.s: Value error, a scripted profile needs"),
        ("budget:\n  run: {max_usd: 0}\n", "huddle.yaml:2: budget.run.max_usd: Input should be greater than 0"),
        ("budget:\n  session: {max_tokens: 0}\n", "huddle.yaml:2: budget.session.max_tokens: Input should be greater"),
    ],
)
def test_bad_config_names_file_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    write(tmp_path / "huddle.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert expected in str(info.value)
    assert info.value.exit_code == 2


def test_a_key_pasted_into_the_config_is_never_echoed(tmp_path: Path) -> None:
    write(tmp_path / "huddle.yaml", "models:\n  default: {api_key_env: sk-proj-abcdefghijklmnopqrstu}\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "api_key_env" in str(info.value)
    assert "abcdefghij" not in str(info.value)


def test_cli_reports_a_malformed_config_in_one_line_with_exit_2(tmp_path: Path) -> None:
    bad = write(tmp_path / "team.yaml", "models:\n  default:\n    context_window: lots\n")
    proc = subprocess.run(
        [sys.executable, "-m", "huddle", "--config", str(bad), "models"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "team.yaml:3: models.default.context_window" in lines[0]
    assert "integer" in lines[0]


def test_model_info_takes_every_capability_autogen_knows(tmp_path: Path) -> None:
    """huddle.yaml refused `model_info.multiple_system_messages`; every field of autogen's ModelInfo is accepted."""
    from autogen_core.models import ModelInfo

    from huddle.config.settings import Capabilities
    from huddle.models.factory import model_info_for

    assert set(ModelInfo.__annotations__) <= set(Capabilities.model_fields)
    config = tmp_path / "huddle.yaml"
    config.write_text(
        "models:\n  default: {model: my-server-model, base_url: 'http://127.0.0.1:9/v1',"
        " model_info: {multiple_system_messages: false, vision: true}}\n"
    )
    profile = load_settings().profile()  # huddle.yaml in the working directory
    info = model_info_for(profile)
    assert (info["multiple_system_messages"], info["vision"]) == (False, True)
    unknown = model_info_for(profile.model_copy(update={"model_info": Capabilities()}))
    assert unknown["multiple_system_messages"] is True  # autogen's Memory works on models it does not know
