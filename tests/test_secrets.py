"""Credentials never reach a message: key shapes and secret-named environment values are masked."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from autogen_core.models import CreateResult, RequestUsage, UserMessage
from autogen_ext.models.replay import ReplayChatCompletionClient

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


class _SplitKeyClient(ReplayChatCompletionClient):
    """Streams its one reply in the given chunks, a key split across two of them as a model's tokens would."""

    def __init__(self, chunks: list[str]) -> None:
        super().__init__(["".join(chunks)])
        self.chunks = chunks

    async def create_stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[str | CreateResult, None]:
        for chunk in self.chunks:
            yield chunk
        usage = RequestUsage(prompt_tokens=3, completion_tokens=9)
        yield CreateResult(finish_reason="stop", content="".join(self.chunks), usage=usage, cached=False)


async def test_a_key_split_across_streamed_chunks_is_masked_in_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a console (or a serve surface) shows live is masked like the saved reply, however the key is split."""
    monkeypatch.setenv("LLM_CRED", "gateway-7f3a9c1e55")
    chunks = ["Your key is sk-pro", "j-abcdefghijklm", "nop, the gateway's gate", "way-7f3a", "9c1e55. Bye"]
    profile = ModelProfile(name="gw", model="m", base_url="http://127.0.0.1:9", api_key_env="LLM_CRED")
    client = build_client(profile, UsageLedger(), agent="a", wrap=lambda raw, p, a: _SplitKeyClient(chunks))
    items = [item async for item in client.create_stream([UserMessage(content="key?", source="user")])]
    await client.close()
    shown = [item for item in items if isinstance(item, str)]
    assert "".join(shown) == f"Your key is {MASK}, the gateway's {MASK}. Bye"
    assert not any("sk-pro" in text or "gate" + "way-" in text or "9c1e55" in text for text in shown)


async def test_the_response_cache_on_disk_holds_no_key(tmp_path: Path) -> None:
    """The cache sits below the meter: replies (whole or streamed) are masked before diskcache writes them."""
    key = "sk-proj-" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7"
    cache_dir = tmp_path / "cache"
    with ScriptedServer() as server:
        server.add_rule(Rule(reply=Reply(content=f"Your key is {key}.")))
        profile = ModelProfile(name="s", model="m", base_url=server.base_url, max_retries=0)
        for _ in range(2):  # the second answers from the cache
            client = build_client(profile, UsageLedger(), agent="a", cache_dir=cache_dir)
            result = await client.create([UserMessage(content="whole", source="user")])
            streamed = [item async for item in client.create_stream([UserMessage(content="streamed", source="user")])]
            await client.close()
            text = "".join(item for item in streamed if isinstance(item, str))
            assert result.content == f"Your key is {MASK}." and text.endswith(f"{MASK}.")
        assert len(server.chat_requests) == 2
    stored = b"".join(path.read_bytes() for path in cache_dir.rglob("*") if path.is_file())
    assert key.encode() not in stored and b"sk-proj" not in stored and MASK.encode() in stored


def test_a_short_api_key_env_value_is_masked_from_four_characters_and_a_shorter_one_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 4-character key is masked; 1-3 characters cannot be without garbling text: one warning line, at load."""
    monkeypatch.setenv("SHORT_CRED", "q7Zx")
    monkeypatch.setenv("TINY_CRED", "x9")
    for _ in range(2):
        protect_env("SHORT_CRED", "TINY_CRED")
    assert redact("the key q7Zx failed") == f"the key {MASK} failed"
    assert redact("x9 stays") == "x9 stays"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "TINY_CRED" in warnings[0] and "x9" not in warnings[0]


def test_an_unusable_cache_dir_is_one_error_line(isolated_env: Path, tmp_path: Path) -> None:
    """A file where ``<data dir>/cache`` should be (root ignores permissions, so a chmod would not provoke it)."""
    with ScriptedServer(fallback=Reply(content="ok")) as server:
        (tmp_path / "huddle.yaml").write_text(f"models:\n  default: {{model: m, base_url: '{server.base_url}'}}\n")
        isolated_env.mkdir(parents=True, exist_ok=True)
        (isolated_env / "cache").write_text("not a folder")
        proc = subprocess.run(
            [sys.executable, "-m", "huddle", "run", "hi", "--cache"],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ),
        )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")
    assert len(proc.stderr.strip().splitlines()) == 1 and str(isolated_env / "cache") in proc.stderr
