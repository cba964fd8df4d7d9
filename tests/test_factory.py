"""The model factory: capabilities for unknown models, providers, and the missing-extra error."""

from __future__ import annotations

import subprocess
import sys

import pytest
from autogen_core.models import UserMessage

from huddle.config.settings import Capabilities, ModelProfile
from huddle.errors import ConfigError
from huddle.models.factory import build_client, model_info_for
from huddle.models.metering import MeteredClient
from huddle.usage import UsageLedger


def test_known_openai_model_keeps_autogens_capabilities() -> None:
    info = model_info_for(ModelProfile(model="gpt-4o"))
    assert info["vision"] is True and info["function_calling"] is True


def test_unknown_model_gets_sensible_defaults_and_profile_overrides_win() -> None:
    info = model_info_for(ModelProfile(model="qwen2.5:7b", base_url="http://127.0.0.1:11434/v1"))
    assert (info["function_calling"], info["json_output"], info["vision"]) == (True, True, False)
    overridden = model_info_for(
        ModelProfile(model="qwen2.5:7b", model_info=Capabilities(function_calling=False, vision=True, family="qwen"))
    )
    assert (overridden["function_calling"], overridden["vision"], overridden["family"]) == (False, True, "qwen")


def test_keyless_server_profile_builds_but_openai_without_key_is_a_config_error() -> None:
    keyless = build_client(ModelProfile(name="ollama", model="llama3", base_url="http://127.0.0.1:9/v1"), UsageLedger())
    assert isinstance(keyless, MeteredClient)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build_client(ModelProfile(name="default"), UsageLedger())


async def test_scripted_provider_replays_and_is_metered() -> None:
    ledger = UsageLedger()
    client = build_client(
        ModelProfile(name="canned", provider="scripted", replies=["first", "second"]), ledger, agent="x"
    )
    first = await client.create([UserMessage(content="hi", source="user")])
    second = await client.create([UserMessage(content="hi", source="user")])
    assert (first.content, second.content) == ("first", "second")
    assert [(r.agent, r.profile, r.model) for r in ledger.records()] == [("x", "canned", "scripted")] * 2


def test_missing_local_extra_names_the_pip_command() -> None:
    """With llama_cpp unimportable, the local profile fails with the exact install command, exit 2."""
    code = (
        "import sys; sys.modules['llama_cpp'] = None\nfrom huddle.cli import run\nrun(['-m', 'local', 'ask', 'hi'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert 'pip install "huddle-agents[local]"' in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_a_priced_scripted_profile_is_metered_like_any_model() -> None:
    """autogen's replay client marked every reply cached, so a priced scripted profile cost $0 and could not show a
    budget at work; it is now counted and priced like a model."""
    from huddle.config.settings import Price

    profile = ModelProfile(
        provider="scripted", replies=["hello there, friend"], price=Price(input_per_mtok=1000, output_per_mtok=2000)
    )
    ledger = UsageLedger()
    client = build_client(profile, ledger, agent="a")
    await client.create([UserMessage(content="Say hi to me please", source="user")])
    (record,) = ledger.records()
    assert not record.cached and record.prompt_tokens > 0 and record.completion_tokens > 0
    expected = (record.prompt_tokens * 1000 + record.completion_tokens * 2000) / 1_000_000
    assert record.cost_usd == pytest.approx(expected) and record.cost_usd > 0
