"""MCP servers as tools: a real stdio server (the SDK's MCPServer, written to a temp file) started through
`open_mcp_tools`."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from huddle.errors import ConfigError, HuddleError, MissingExtraError
from huddle.tools import Tool
from huddle.tools.mcp import McpServerSpec, McpTool, open_mcp_tools

SERVER = '''
import asyncio
import hashlib
import os
import sys
from pathlib import Path

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations

Path(os.environ["PIDFILE"]).write_text(str(os.getpid()))
# A server that prints to stdout breaks the protocol's framing; the client must shrug it off, in one log line.
print("starting up")
sys.stdout.flush()
mcp = MCPServer("demo")


@mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool()
def shout(text: str, times: int = 1) -> str:
    """Upper-case a text, repeated."""
    return text.upper() * times


@mcp.tool()
async def slow(seconds: float) -> str:
    """Sleep for a while."""
    await asyncio.sleep(seconds)
    return "awake"


@mcp.tool()
def fail(message: str) -> str:
    """Always fail (a ToolError: mcp 2 passes its text on; any other exception's text stays on the server)."""
    raise ToolError(message)


@mcp.tool()
def crash() -> str:
    """Kill the server."""
    os._exit(3)


@mcp.tool()
def refuse(query: str) -> CallToolResult:
    """Answer with an error result, as mcp-server-sqlite does for a query it will not run."""
    return CallToolResult(content=[TextContent(text="Error: Only SELECT queries are allowed")], is_error=True)


@mcp.tool()
def header(name: str, ctx: Context) -> str:
    """A fingerprint of a header of the HTTP request that carried this call ('(none)' over stdio)."""
    value = (ctx.headers or {}).get(name.lower())
    return "(none)" if value is None else hashlib.sha256(value.encode()).hexdigest()


if __name__ == "__main__":
    # MCP_PORT set: the same tools over streamable HTTP on that port (tests/test_mcp_http.py), else over stdio.
    if os.environ.get("MCP_PORT"):
        mcp.run(transport="streamable-http", port=int(os.environ["MCP_PORT"]))
    else:
        mcp.run()
'''

HANG = """
import os, time
from pathlib import Path
Path(os.environ["PIDFILE"]).write_text(str(os.getpid()))
time.sleep(60)
"""


@pytest.fixture
def server_script(tmp_path: Path) -> Path:
    path = tmp_path / "demo_server.py"
    path.write_text(SERVER)
    return path


def spec_for(script: Path, pidfile: str = "server.pid", **options: Any) -> McpServerSpec:
    """A spec starting `script` with this interpreter (which has mcp), recording the server's pid in `pidfile`."""
    return McpServerSpec(
        command=sys.executable, args=[str(script)], env={"PIDFILE": str(Path(pidfile).resolve())}, **options
    )


def is_alive(pid: int) -> bool:
    """Whether `pid` exists; an unreaped child (a zombie) counts as alive, so this also catches missing waits."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def by_name(tools: list[Tool]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


# --------------------------------------------------------------------------------------------------------------------
# Listing and calling
# --------------------------------------------------------------------------------------------------------------------


async def test_tools_are_listed_with_the_servers_schemas(server_script: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with open_mcp_tools([spec_for(server_script, timeout_s=7)]) as tools:
        assert [t.name for t in tools] == ["add", "shout", "slow", "fail", "crash", "refuse", "header"]
        add, shout = by_name(tools)["add"], by_name(tools)["shout"]
        assert isinstance(add, McpTool) and add.original_name == "add"
        assert add.schema["description"] == "Add two integers."
        params = add.schema.get("parameters")
        assert params is not None
        assert {k: v["type"] for k, v in params["properties"].items()} == {"a": "integer", "b": "integer"}
        assert sorted(params.get("required", [])) == ["a", "b"]
        assert params.get("additionalProperties") is False  # undeclared arguments are reported, not dropped
        shout_params = shout.schema.get("parameters")
        assert shout_params is not None and shout_params.get("required") == ["text"]
        assert shout_params["properties"]["times"]["default"] == 1
        # readOnlyHint makes a read tool; unannotated tools are assumed to act on the world, as the MCP spec says.
        assert (add.side_effects, shout.side_effects) == ("read", "external")
        assert add.timeout_s == 7 and add.retries == 0
    # The server's stray stdout line was logged by the SDK as one line, not as a traceback.
    sdk_records = [r for r in caplog.records if r.name.startswith("mcp")]
    assert all(r.exc_info is None and r.levelno <= logging.WARNING for r in sdk_records)


async def test_a_call_returns_the_servers_result(server_script: Path) -> None:
    async with open_mcp_tools([spec_for(server_script)]) as tools:
        add, shout = by_name(tools)["add"], by_name(tools)["shout"]
        result = await add.run({"a": 2, "b": 3})
        assert (result.ok, result.content, result.attempts) == (True, "5", 1)
        assert result.args == {"a": 2, "b": 3}
        assert (await shout.run('{"text": "hi", "times": 2}')).content == "HIHI"  # a model's JSON string
        assert (await shout.run({"text": "hi"})).content == "HI"  # the unset optional is not sent as null
        assert (await shout.run({"text": "hi", "times": None})).content == "HI"


async def test_invalid_arguments_name_the_field_and_never_reach_the_server(server_script: Path) -> None:
    async with open_mcp_tools([spec_for(server_script)]) as tools:
        add = by_name(tools)["add"]
        cases: dict[str, dict[str, Any] | str] = {
            "argument 'a': wrong type (string) (got \"x\", expected integer)": {"a": "x", "b": 1},
            "missing required argument 'b' (expected integer)": {"a": 1},
            "unexpected argument 'c' (accepted: a, b)": {"a": 1, "b": 2, "c": 3},
            "argument 'b': wrong type (boolean)": {"a": 1, "b": True},
            "not valid JSON": "{a: 1",
        }
        for expected, args in cases.items():
            result = await add.run(args)
            assert (result.ok, result.error_kind, result.attempts) == (False, "invalid_arguments", 0)
            assert result.error is not None and "\n" not in result.error
            assert expected in result.error and "tool 'add'" in result.error
            assert json.loads(result.content)["error"] == "invalid_arguments"


async def test_a_server_side_error_is_a_failed_result(server_script: Path) -> None:
    async with open_mcp_tools([spec_for(server_script)]) as tools:
        result = await by_name(tools)["fail"].run({"message": "the disk is on fire"})
        assert (result.ok, result.error_kind) == (False, "exception")
        assert result.error is not None and "the disk is on fire" in result.error


async def test_an_error_result_is_a_failed_call_with_the_servers_text(server_script: Path) -> None:
    # A tool that does not raise but answers with is_error set: failed, and the model reads the server's own words.
    async with open_mcp_tools([spec_for(server_script)]) as tools:
        result = await by_name(tools)["refuse"].run({"query": "DROP TABLE users"})
    assert (result.ok, result.error_kind) == (False, "exception")
    assert result.error == "McpToolError: Error: Only SELECT queries are allowed"


async def test_the_allowlist_hides_other_tools_and_unknown_names_are_reported(server_script: Path) -> None:
    async with open_mcp_tools([spec_for(server_script, tools=["shout", "add"])]) as tools:
        assert [t.name for t in tools] == ["shout", "add"]
    with pytest.raises(
        ConfigError, match=r"has no tool\(s\) sum; it offers: add, shout, slow, fail, crash, refuse, header"
    ):
        async with open_mcp_tools([spec_for(server_script, tools=["add", "sum"])]):
            pass  # pragma: no cover


async def test_names_prefix_tools_and_clashes_are_config_errors(server_script: Path) -> None:
    one = spec_for(server_script, "one.pid", name="one", tools=["add"])
    two = spec_for(server_script, "two.pid", name="two", tools=["add", "shout"])
    async with open_mcp_tools([one, two]) as tools:
        assert [t.name for t in tools] == ["one__add", "two__add", "two__shout"]
        assert (await tools[1].run({"a": 40, "b": 2})).content == "42"  # the server is asked for 'add'
    with pytest.raises(ConfigError, match=r"'add' is offered by both .* and .*; give the servers different 'name:'"):
        async with open_mcp_tools([spec_for(server_script, "a.pid"), spec_for(server_script, "b.pid")]):
            pass  # pragma: no cover
    for pidfile in ("one.pid", "two.pid", "a.pid", "b.pid"):
        assert not is_alive(int(Path(pidfile).read_text()))  # every server stopped, the clash too


# --------------------------------------------------------------------------------------------------------------------
# Timeouts, crashes, shutdown
# --------------------------------------------------------------------------------------------------------------------


async def test_a_slow_call_times_out_and_the_server_stays_usable(server_script: Path) -> None:
    async with open_mcp_tools([spec_for(server_script, timeout_s=0.5)]) as tools:
        started = time.perf_counter()
        result = await by_name(tools)["slow"].run({"seconds": 3})
        assert (result.ok, result.error_kind) == (False, "timeout")
        assert time.perf_counter() - started < 2
        # MCPServer serves requests concurrently, so the abandoned call does not block the next one.
        assert (await by_name(tools)["add"].run({"a": 1, "b": 1})).content == "2"


async def test_servers_are_stopped_and_reaped_on_exit(server_script: Path) -> None:
    async with open_mcp_tools([spec_for(server_script)]) as tools:
        pid = int(Path("server.pid").read_text())
        assert is_alive(pid)
        add = by_name(tools)["add"]
    assert not is_alive(pid)
    result = await add.run({"a": 1, "b": 2})
    assert not result.ok and result.error is not None and "is not running" in result.error


async def test_a_server_that_dies_fails_its_calls_without_hanging(server_script: Path) -> None:
    async with open_mcp_tools([spec_for(server_script, timeout_s=5)]) as tools:
        crashed = await by_name(tools)["crash"].run({})
        assert not crashed.ok and crashed.error is not None
        assert "has exited or closed its connection" in crashed.error
        started = time.perf_counter()
        after = await by_name(tools)["add"].run({"a": 1, "b": 2})
        assert not after.ok and after.error is not None and "is not running (it exited" in after.error
        assert time.perf_counter() - started < 3  # told at once, not after the 5 s timeout


# --------------------------------------------------------------------------------------------------------------------
# Start-up failures and the extra
# --------------------------------------------------------------------------------------------------------------------


async def test_a_missing_command_is_a_huddle_error_naming_it() -> None:
    with pytest.raises(HuddleError, match=r"command 'no-such-mcp-server-xyz' not found on PATH"):
        async with open_mcp_tools([McpServerSpec(command="no-such-mcp-server-xyz", args=["--stdio"])]):
            pass  # pragma: no cover
    with pytest.raises(HuddleError, match=r"command './nope.sh' not found"):
        async with open_mcp_tools([McpServerSpec(command="./nope.sh")]):
            pass  # pragma: no cover


async def test_a_server_that_exits_at_start_reports_its_stderr() -> None:
    spec = McpServerSpec(command=sys.executable, args=["missing_server.py"], name="broken")
    with pytest.raises(HuddleError) as caught:
        async with open_mcp_tools([spec]):
            pass  # pragma: no cover
    message = str(caught.value)
    assert message.startswith(f"MCP server 'broken' ({sys.executable} missing_server.py) failed to start")
    assert "missing_server.py" in message.split("its stderr ends:")[1]  # python's own complaint
    assert "\n" not in message and "Traceback" not in message


async def test_a_server_that_never_answers_is_stopped_after_the_startup_timeout(tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text(HANG)
    started = time.perf_counter()
    with pytest.raises(HuddleError, match=r"did not start within 1s"):
        async with open_mcp_tools([spec_for(script, startup_timeout_s=1)]):
            pass  # pragma: no cover
    assert time.perf_counter() - started < 8
    assert not is_alive(int(Path("server.pid").read_text()))


async def test_without_the_mcp_package_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_mcp_tools([]) as tools:  # no servers: no need for the package at all
        assert tools == []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mcp" else real_find_spec(name, *a)
    )
    with pytest.raises(MissingExtraError, match=r'pip install "huddle-agents\[mcp\]"'):
        async with open_mcp_tools([McpServerSpec(command="python")]):
            pass  # pragma: no cover
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
    for old_or_new in ("1.30.0", "2.2.1", "3.0.0", "unknown"):
        monkeypatch.setattr(importlib.metadata, "version", lambda name, v=old_or_new: v)
        with pytest.raises(HuddleError, match=rf'need mcp>=2.3,<3, but mcp {old_or_new} is installed: pip install "'):
            async with open_mcp_tools([McpServerSpec(command="python")]):
                pass  # pragma: no cover


# --------------------------------------------------------------------------------------------------------------------
# The spec and odd schemas
# --------------------------------------------------------------------------------------------------------------------


def test_the_spec_rejects_typos_and_resolves_cwd_against_the_team_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="extra_forbidden"):
        McpServerSpec.model_validate({"command": "python", "argz": []})
    with pytest.raises(ValidationError, match="name"):
        McpServerSpec(command="python", name="has space")
    with pytest.raises(ValidationError, match="timeout_s"):
        McpServerSpec(command="python", timeout_s=0)
    spec = McpServerSpec.model_validate({"command": "python", "args": ["s.py"]})
    assert spec.with_base_dir(tmp_path).cwd == str(tmp_path)
    assert McpServerSpec(command="python", cwd="srv").with_base_dir(tmp_path).cwd == str(tmp_path / "srv")
    assert McpServerSpec(command="python", cwd="/abs").with_base_dir(tmp_path).cwd == "/abs"


async def test_odd_argument_names_and_allowed_extras_reach_the_server_intact() -> None:
    from jsonschema import Draft202012Validator

    from huddle.tools.mcp.adapter import carrier_model, input_schema
    from huddle.tools.mcp.server import McpServer

    schema = input_schema(
        {
            "properties": {
                "_private": {"type": "string"},
                "from": {"type": "integer"},
                "my-arg": {"type": "array", "items": {"type": "string"}},
                "schema": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            "required": ["from"],
            "additionalProperties": True,
        }
    )
    sent: list[tuple[str, dict[str, Any]]] = []

    async def fake_call(name: str, arguments: dict[str, Any]) -> str:
        sent.append((name, arguments))
        return "ok"

    server = McpServer(McpServerSpec(command="unused"))
    server.call = fake_call  # type: ignore[method-assign]
    args_model, names = carrier_model("odd", schema)
    tool = McpTool(
        server._caller("odd.tool", names, {"from"}),
        validator=Draft202012Validator(schema),
        server="'test'",
        original_name="odd.tool",
        name="odd_tool",
        description="Odd names.",
        args_model=args_model,
    )
    params = tool.schema.get("parameters")
    assert params is not None and list(params["properties"]) == ["_private", "from", "my-arg", "schema"]
    result = await tool.run({"_private": "p", "from": 1, "my-arg": ["x"], "colour": "red", "schema": None})
    assert result.ok, result.error
    # The server gets its own argument names, the undeclared one it allows, and no null for the unset optional.
    assert sent == [("odd.tool", {"colour": "red", "_private": "p", "from": 1, "my-arg": ["x"]})]
    assert result.args["_private"] == "p" and result.args["my-arg"] == ["x"]  # logged under the real names too
    bad = await tool.run({"from": 1.5, "my-arg": [1]})
    assert bad.error is not None and len(sent) == 1
    assert "argument 'from': wrong type (number)" in bad.error and "argument 'my-arg.0'" in bad.error


# --------------------------------------------------------------------------------------------------------------------
# autogen
# --------------------------------------------------------------------------------------------------------------------


async def test_an_assistant_agent_calls_an_mcp_tool(server_script: Path) -> None:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.messages import ToolCallExecutionEvent
    from autogen_core import FunctionCall
    from autogen_core.models import CreateResult, ModelInfo, RequestUsage
    from autogen_ext.models.replay import ReplayChatCompletionClient

    def call(call_id: str, arguments: str) -> CreateResult:
        return CreateResult(
            finish_reason="function_calls",
            content=[FunctionCall(id=call_id, name="add", arguments=arguments)],
            usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
            cached=False,
        )

    client = ReplayChatCompletionClient(
        [call("1", '{"a": 20, "b": 22}'), call("2", '{"a": "twenty"}')],
        model_info=ModelInfo(
            vision=False, function_calling=True, json_output=False, family="unknown", structured_output=False
        ),
    )
    async with open_mcp_tools([spec_for(server_script, tools=["add"])]) as tools:
        agent = AssistantAgent("assistant", model_client=client, tools=[t.as_autogen() for t in tools])
        results = []
        for _ in range(2):
            run = await agent.run(task="add them")
            events = [m for m in run.messages if isinstance(m, ToolCallExecutionEvent)]
            assert len(events) == 1
            results.append(events[0].content[0])
    assert (results[0].content, results[0].is_error) == ("42", False)
    assert results[1].is_error
    message = json.loads(results[1].content)["message"]
    assert "argument 'a': wrong type (string)" in message and "missing required argument 'b'" in message
