"""Bounds on one model call: ``timeout_s`` is the whole call's deadline, not a per-read timeout."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from autogen_core.models import UserMessage

from huddle.config.settings import ModelProfile
from huddle.models.factory import build_client
from huddle.usage import UsageLedger
from huddle.usage.ledger import INTERRUPTED

QUESTION = [UserMessage(content="hi", source="user")]


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """A raw HTTP server that answers every request with headers, then one byte of body every 0.1 s (far under any
    per-read timeout) for ever: only a deadline on the whole call ends it."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while not stop.wait(0.1):
                try:
                    conn.sendall(b" ")  # JSON allows leading whitespace: a slow but valid start of a body
                except OSError:
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    stop.set()
    listener.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_trickling_server_cannot_keep_a_call_past_timeout_s(trickling_server: str, stream: bool) -> None:
    profile = ModelProfile(name="slow", model="m", base_url=trickling_server, timeout_s=1.0, max_retries=0)
    ledger = UsageLedger()
    client = build_client(profile, ledger, agent="a")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="timeout_s=1s"):
        if stream:
            async for _ in client.create_stream(QUESTION):
                pass
        else:
            await client.create(QUESTION)
    await client.close()
    assert time.monotonic() - started < 3.0
    [row] = ledger.records()
    assert row.error is not None and "timeout_s=1s" in row.error


CALLER = """
import asyncio, sys
from autogen_core.models import UserMessage
from huddle.config.settings import ModelProfile
from huddle.models.factory import build_client
from huddle.usage import UsageLedger

profile = ModelProfile(name="slow", model="m", base_url=sys.argv[1], timeout_s=600, max_retries=0)
client = build_client(profile, UsageLedger(sys.argv[2]), agent="a")
asyncio.run(client.create([UserMessage(content="hi", source="user")]))
"""


def test_a_call_in_flight_when_its_process_is_killed_is_in_the_ledger_as_interrupted(
    trickling_server: str, tmp_path: Path
) -> None:
    """The attempt is written before the call: a process killed mid-call leaves its row, interrupted on next open."""
    path = tmp_path / "usage.sqlite"
    child = subprocess.Popen([sys.executable, "-c", CALLER, trickling_server, str(path)])
    try:
        deadline = time.monotonic() + 60
        while not (path.exists() and UsageLedger(path).records()):  # the row is written before the reply comes
            assert time.monotonic() < deadline and child.poll() is None, "no call was written in flight"
            time.sleep(0.1)
        assert [row.state for row in UsageLedger(path).records()] == ["in_flight"]  # still live: left as it is
    finally:
        child.kill()
        child.wait()
    [row] = UsageLedger(path).records()
    assert row.state == "interrupted" and row.error == INTERRUPTED
    assert UsageLedger(path).totals().calls == 1
