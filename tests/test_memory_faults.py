"""Shared memory going away, on a real Chroma server process: the answer and the `RunResult` are never lost, an
optional memory member whose store is down is skipped as a failure, and a fact that could not be stored is said so.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from huddle.config.settings import load_settings
from huddle.memory.store import MemoryUnavailable
from huddle.teams.base import RunResult, Team
from huddle.testing import RecordedRequest, Reply, Rule, ScriptedServer
from tests.commands import console_script

TEAM = """
team: {{name: helpdesk, max_turns: 8}}
agents:
  - {{role: memory, optional: {optional}}}
  - {{role: responder}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def chroma(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Chroma server of its own (URL and process), stopped at the end if the test has not stopped it."""
    port = free_port()
    command = console_script("chroma", "chromadb, a dependency of huddle")
    server = subprocess.Popen(
        [command, "run", "--path", str(tmp_path / "chroma-server"), "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/api/v2/heartbeat", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert server.poll() is None and time.monotonic() < deadline, "the Chroma server did not start"
                time.sleep(0.2)
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=30)


def echo_context(request: RecordedRequest) -> Reply:
    return Reply(content="I was given: " + " | ".join(str(m.get("content")) for m in request.messages[1:]))


def configure(tmp_path: Path, server: ScriptedServer, chroma_url: str, *, optional: bool = True) -> None:
    (tmp_path / "huddle.yaml").write_text(
        f"models:\n  default: {{model: scripted, base_url: '{server.base_url}'}}\n"
        f"memory: {{chroma_url: '{chroma_url}'}}\n"
    )
    (tmp_path / "team.yaml").write_text(TEAM.format(optional=str(optional).lower()))


def assert_answered(result: RunResult) -> None:
    assert result.answer.startswith("I was given:")
    assert not result.stop_reason.startswith("error"), result.stop_reason


async def test_chroma_stopped_mid_session_keeps_the_answer_and_says_the_fact_was_not_stored(
    tmp_path: Path, chroma: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, chroma_server = chroma
    with ScriptedServer(rules=[Rule(agent="responder", reply=echo_context)]) as server:
        configure(tmp_path, server, url)
        async with Team.load("team.yaml", load_settings(), session_id="s1") as team:
            first = await team.run("Please remember that my order number is 1042.")
            chroma_server.terminate()
            chroma_server.wait(timeout=30)
            second = await team.run("Remember that my colour is blue. What is my order number?")
        responder_requests = [r for r in server.requests if "could not store" in str(r.messages)]

    assert_answered(first)
    assert first.failures == {}
    assert_answered(second)  # the answer and the RunResult survive the store going away
    assert "could not store: my colour is blue" in second.failures["memory"]
    assert "Connection refused" in second.failures["memory/episodic"]  # keeping the answer failed: recorded
    assert "could not store: my colour is blue" in second.answer  # the responder was told, so the user is
    assert len(responder_requests) == 1


async def test_chroma_down_at_start_skips_an_optional_memory_member(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with ScriptedServer(rules=[Rule(agent="responder", reply=echo_context)]) as server:
        configure(tmp_path, server, nobody)
        async with Team.load("team.yaml", load_settings(), session_id="s1") as team:
            result = await team.run("What is my order number?")
            again = await team.run("Remember that my colour is blue.")

    for run in (result, again):
        assert_answered(run)
        assert [d.speaker for d in run.decisions] == ["memory", "responder"]  # failed once, then routed around
        assert "cannot reach the Chroma server" in run.failures["memory"]
    assert "memory failed" in result.answer  # the responder read the member's failure
    assert "could not store: my colour is blue" in again.answer


def test_a_required_memory_that_is_down_at_start_is_one_error_line(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with ScriptedServer(rules=[Rule(agent="responder", reply=echo_context)]) as server:
        configure(tmp_path, server, nobody, optional=False)
        with pytest.raises(MemoryUnavailable, match="cannot reach the Chroma server"):
            Team.load("team.yaml", load_settings())
        proc = subprocess.run(
            [sys.executable, "-m", "huddle", "run", "Hi", "--team", "team.yaml"],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ),
        )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr, proc.stderr
