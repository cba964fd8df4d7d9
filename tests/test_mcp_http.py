"""Streamable-HTTP MCP servers configured by URL: our test server (tests/test_mcp.py's, run with the SDK's
streamable-http transport on a free port in a subprocess) reached through `open_mcp_tools`, headers from the
environment."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from huddle.errors import HuddleError
from huddle.tools.mcp import McpServerSpec, list_mcp_tools, open_mcp_tools
from tests.test_mcp import SERVER

TOKEN = "s3cret-mcp-token-1234567890"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    """The demo server serving streamable HTTP; yields its endpoint URL."""
    script = tmp_path / "demo_server.py"
    script.write_text(SERVER)
    port = free_port()
    env = {**os.environ, "MCP_PORT": str(port), "PIDFILE": str(tmp_path / "server.pid")}
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the HTTP test server did not come up"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_url_server_lists_and_runs_tools_with_headers_from_the_environment(
    http_server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DEMO_MCP_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    spec = McpServerSpec(
        url=http_server, headers={"Authorization": "Bearer ${DEMO_MCP_TOKEN}"}, name="web", tools=["add", "header"]
    )
    async with open_mcp_tools([spec]) as tools:
        add, header = tools
        assert (add.name, add.side_effects) == ("web__add", "read")
        assert (await add.run({"a": 40, "b": 2})).content == "42"
        fingerprint = hashlib.sha256(f"Bearer {TOKEN}".encode()).hexdigest()
        assert (await header.run({"name": "Authorization"})).content == fingerprint
    assert spec.label == f"'web' ({http_server})"
    assert TOKEN not in caplog.text  # header values are never logged


async def test_an_error_result_over_http_is_a_failed_call(http_server: str) -> None:
    async with open_mcp_tools([McpServerSpec(url=http_server, tools=["refuse"])]) as (refuse,):
        result = await refuse.run({"query": "DROP TABLE users"})
    assert (result.ok, result.error) == (False, "McpToolError: Error: Only SELECT queries are allowed")


async def test_an_unreachable_url_is_one_error_line_without_the_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_MCP_TOKEN", TOKEN)
    url = f"http://127.0.0.1:{free_port()}/mcp"
    spec = McpServerSpec(url=url, headers={"X-Token": "${DEMO_MCP_TOKEN}"}, startup_timeout_s=5)
    started = time.perf_counter()
    with pytest.raises(HuddleError) as caught:
        async with open_mcp_tools([spec]):
            pass  # pragma: no cover
    assert time.perf_counter() - started < 6
    message = str(caught.value)
    assert message.startswith(f"MCP server '{url}' ") and "\n" not in message and TOKEN not in message
    # `huddle tools` gets the same line as an entry, not an exception.
    (listing,) = await list_mcp_tools([spec])
    assert listing.tools == [] and listing.error is not None and TOKEN not in listing.error


async def test_a_header_naming_an_unset_variable_is_reported_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_SUCH_MCP_TOKEN", raising=False)
    spec = McpServerSpec(url="http://127.0.0.1:9/mcp", headers={"Authorization": "Bearer ${NO_SUCH_MCP_TOKEN}"})
    with pytest.raises(HuddleError, match=r"header 'Authorization' uses \$\{NO_SUCH_MCP_TOKEN\}, which is not set"):
        async with open_mcp_tools([spec]):
            pass  # pragma: no cover


def test_an_entry_has_exactly_one_of_command_and_url() -> None:
    with pytest.raises(ValidationError, match="exactly one of 'command'"):
        McpServerSpec.model_validate({"command": "python", "url": "http://127.0.0.1:1/mcp"})
    with pytest.raises(ValidationError, match="exactly one of 'command'"):
        McpServerSpec.model_validate({"tools": ["add"]})
    with pytest.raises(ValidationError, match="args, cwd: only for a stdio server"):
        McpServerSpec.model_validate({"url": "http://127.0.0.1:1/mcp", "args": ["x"], "cwd": "srv"})
    with pytest.raises(ValidationError, match="headers: only for a streamable-HTTP server"):
        McpServerSpec.model_validate({"command": "python", "headers": {"X": "y"}})
    with pytest.raises(ValidationError, match="url"):
        McpServerSpec.model_validate({"url": "ftp://example.com/mcp"})
    spec = McpServerSpec(url="http://127.0.0.1:1/mcp")
    assert spec.with_base_dir("/team/folder") == spec  # nothing to resolve for a URL
