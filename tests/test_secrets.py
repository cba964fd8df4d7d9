"""Credentials never reach a message: key shapes and secret-named environment values are masked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from autogen_core.models import UserMessage

from huddle.config.settings import ModelProfile
from huddle.models.factory import build_client
from huddle.secrets import MASK, protect_env, redact
from huddle.testing import Reply, Rule, ScriptedServer
from huddle.tools.builtin import make_shell_tool
from huddle.usage import UsageLedger


def test_key_shapes_are_masked() -> None:
    text = redact("failed with sk-abcdefghijklmnop, Bearer abc.def.ghijk and api_key=zyxwvutsrq")
    assert "sk-abcdefghijklmnop" not in text and "abc.def.ghijk" not in text and "zyxwvutsrq" not in text
    assert text.count(MASK) == 3


def test_an_environment_secret_set_or_changed_after_earlier_calls_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment scan is cached for speed; the cache must follow the environment, or a key set later leaks."""
    assert redact("the value is plain-words-here") == "the value is plain-words-here"
    monkeypatch.setenv("MY_SERVICE_TOKEN", "plain-words-here")
    assert redact("the value is plain-words-here") == f"the value is {MASK}"
    monkeypatch.setenv("MY_SERVICE_TOKEN", "other-words-now")
    assert redact("now other-words-now") == f"now {MASK}"
    monkeypatch.setenv("UNRELATED_SETTING", "unrelated-value")  # a name that does not say "secret" is left alone
    assert redact("unrelated-value") == "unrelated-value"


async def test_the_key_in_any_variable_a_profile_names_is_masked_and_never_kept_from_a_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``api_key_env: LLM_CRED`` holding a key of no known shape: masked on error paths, and out of model replies."""
    key = "gateway-7f3a9c1e55"
    monkeypatch.setenv("LLM_CRED", key)
    assert redact(f"failed with {key}") == f"failed with {key}"  # neither its name nor its shape says secret
    with ScriptedServer() as server:
        server.add_rule(Rule(reply=Reply(content=f"Your key is {key} and sk-abcdefghijklmnop.")))
        profile = ModelProfile(name="gw", model="m", base_url=server.base_url, api_key_env="LLM_CRED", max_retries=0)
        ledger = UsageLedger()
        client = build_client(profile, ledger, agent="a")
        assert redact(f"failed with {key}") == f"failed with {MASK}"
        result = await client.create([UserMessage(content="what is my key?", source="user")])
        await client.close()
    assert result.content == f"Your key is {MASK} and {MASK}."


async def test_run_command_gets_no_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A program the model starts could print a key back in a shape `redact` misses (here reversed): it never sees
    one. Stripped: every ``api_key_env`` variable and any KEY/SECRET/TOKEN/PASSWORD name; the rest is kept."""
    monkeypatch.setenv("LLM_CRED", "gateway-7f3a9c1e55")
    monkeypatch.setenv("MY_DB_PASSWORD", "hunter2-hunter2")
    monkeypatch.setenv("SOME_API_KEY", "sk-abcdefghijklmnop")
    monkeypatch.setenv("PLAIN_SETTING", "kept-as-is")
    protect_env("LLM_CRED")
    script = (
        "import os; names = ('LLM_CRED', 'MY_DB_PASSWORD', 'SOME_API_KEY', 'PLAIN_SETTING');"
        " print(repr([os.environ.get(n, '')[::-1] for n in names]))"
    )
    result = await make_shell_tool(tmp_path).run({"command": f'{sys.executable} -c "{script}"'})
    assert result.ok, result.content
    assert "['', '', '', 'si-sa-tpek']" in result.content


def test_a_key_pasted_by_the_user_is_masked_in_sessions_and_memory(tmp_path: Path) -> None:
    from huddle.config.settings import load_settings
    from huddle.memory.store import VectorMemory
    from huddle.storage.sessions import SessionStore

    pasted = "sk-proj-" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7" * 2
    with SessionStore(tmp_path / "sessions.sqlite") as store:
        turn = store.begin_turn("s1", "team", f"my key is {pasted}, keep it", "r1")
        store.finish_turn("s1", turn, answer=f"noted: {pasted}", state={}, messages=[{"content": pasted}])
    raw = (tmp_path / "sessions.sqlite").read_bytes()
    assert pasted.encode() not in raw
    memory = VectorMemory.from_settings(load_settings())
    item = memory.add(f"the user's key is {pasted}", scope="user:default")
    assert pasted not in item.text and pasted not in memory.get(item.id).text  # type: ignore[union-attr]
