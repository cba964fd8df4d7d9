"""Offline tokenizer: stock tiktoken and autogen count tokens with the network unreachable."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

NO_NETWORK = textwrap.dedent(
    """
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network disabled for this test")

    socket.socket.connect = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    """
)


def run_offline(code: str, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache_dir)}
    return subprocess.run(
        [sys.executable, "-c", NO_NETWORK + textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120
    )


def test_hello_world_in_cl100k_base_with_no_network(tmp_path: Path) -> None:
    cache = tmp_path / "empty-cache"
    proc = run_offline(
        """
        from huddle.models.tokens import ensure_offline_tiktoken
        ensure_offline_tiktoken()
        import tiktoken
        print(tiktoken.get_encoding("cl100k_base").encode("hello world"))
        print(tiktoken.encoding_for_model("gpt-4o").name)
        """,
        cache,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[15339, 1917]", "o200k_base"]
    assert len(list(cache.iterdir())) == 2  # the two rank files, under tiktoken's own cache names


def test_autogen_count_tokens_and_unknown_models_work_offline(tmp_path: Path) -> None:
    proc = run_offline(
        """
        from huddle.models.tokens import count_text, encoding_for
        from huddle.models.factory import build_client
        from huddle.config.settings import ModelProfile
        from huddle.usage import UsageLedger
        from autogen_core.models import UserMessage

        print(encoding_for("my-local-llama").name, count_text("hello world", "my-local-llama"))
        profile = ModelProfile(name="p", model="gpt-4o", base_url="http://127.0.0.1:9/v1")
        client = build_client(profile, UsageLedger())
        print(client.count_tokens([UserMessage(content="hello world", source="user")]) > 2)
        """,
        tmp_path / "cache",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["cl100k_base 2", "True"]


def test_without_seeding_tiktoken_really_needs_the_network(tmp_path: Path) -> None:
    """Guards the test above: with an empty cache and no seeding, stock tiktoken cannot load cl100k_base."""
    proc = run_offline(
        """
        import tiktoken
        tiktoken.get_encoding("cl100k_base")
        """,
        tmp_path / "cache",
    )
    assert proc.returncode != 0
