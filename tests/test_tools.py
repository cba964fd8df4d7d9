"""The tool core and the built-in tools: schemas, validation, failures as results, limits, confinement, autogen."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field

from huddle.errors import HuddleError
from huddle.models.tokens import count_text
from huddle.tools import (
    Tool,
    ToolArgumentsError,
    ToolDefinitionError,
    ToolRegistry,
    ToolResult,
    UnknownToolError,
    parse_docstring,
    tool,
)
from huddle.tools.builtin import MAX_NOTE_BYTES, builtin_registry, calculator, clock, make_notes_tools


@tool
def add(a: int, b: Annotated[int, Field(description="The second addend.")] = 2, note: str | None = None) -> int:
    """Add two integers.

    Only the first paragraph becomes the description.

    Args:
        a (int): The first addend,
            which may span lines.
        b: Overridden by the Annotated description.
        note: Ignored by the sum.

    Returns:
        The sum.
    """
    return a + b


def error_of(result: ToolResult) -> dict[str, Any]:
    """The structured error a model is shown."""
    assert not result.ok
    payload: dict[str, Any] = json.loads(result.content)
    return payload


# --------------------------------------------------------------------------------------------------------------------
# Definition and schema
# --------------------------------------------------------------------------------------------------------------------


def test_schema_comes_from_hints_and_docstring() -> None:
    schema = add.schema
    assert schema["name"] == "add"
    assert schema.get("description") == "Add two integers."
    params = schema.get("parameters")
    assert params is not None
    assert params["required"] == ["a"]
    assert params.get("additionalProperties") is False
    props = params["properties"]
    assert props["a"]["type"] == "integer"
    assert props["a"]["description"] == "The first addend, which may span lines."
    assert props["b"]["description"] == "The second addend."  # Annotated wins over the docstring
    assert props["b"]["default"] == 2
    assert props["note"]["description"] == "Ignored by the sum."
    assert (add.side_effects, add.timeout_s, add.retries, add.max_result_tokens) == ("read", 30.0, 0, 1000)


def test_decorator_options_and_overrides() -> None:
    @tool(name="shout", description="Upper-case a text.", side_effects="external", timeout_s=5, retries=2)
    async def loud(text: str) -> str:
        """Not used: description= wins."""
        return text.upper()

    assert isinstance(loud, Tool)
    assert (loud.name, loud.description, loud.side_effects, loud.timeout_s, loud.retries) == (
        "shout",
        "Upper-case a text.",
        "external",
        5.0,
        2,
    )
    assert loud.args_model.model_json_schema()["required"] == ["text"]


def test_parse_docstring_without_args_section() -> None:
    assert parse_docstring("Do it.\n\nMore detail.") == ("Do it.", {})
    assert parse_docstring(None) == ("", {})


@pytest.mark.parametrize(
    ("define", "match"),
    [
        (lambda: tool(name="f", description="d")(lambda x: x), "no type hint"),
        (lambda: tool(name="bad name!", description="d")(lambda: None), "name 'bad name!' is invalid"),
        (lambda: tool(name="f", description="d", timeout_s=0)(lambda: None), "timeout_s must be > 0"),
        (lambda: tool(name="f", description="d", retries=-1)(lambda: None), "retries must be between 0 and 10"),
        (lambda: tool(name="f", description="d", retries=11)(lambda: None), "retries must be between 0 and 10"),
    ],
)
def test_definition_errors_say_how_to_fix(define: Any, match: str) -> None:
    with pytest.raises(ToolDefinitionError, match=match):
        define()


def test_a_tool_without_description_is_refused() -> None:
    def undocumented(x: int) -> int:
        return x

    with pytest.raises(ToolDefinitionError, match="docstring"):
        tool(undocumented)


# --------------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------------


def test_validation_error_names_tool_field_and_expectation() -> None:
    with pytest.raises(ToolArgumentsError) as info:
        add.validate({"a": "seven"})
    message = str(info.value)
    assert "'add'" in message and "'a'" in message and "expected integer" in message
    assert "\n" not in message
    with pytest.raises(ToolArgumentsError, match="missing required argument 'a'"):
        add.validate({})
    with pytest.raises(ToolArgumentsError, match=r"unexpected argument 'c'.*accepted: a, b, note"):
        add.validate({"a": 1, "c": 2})


def test_validate_accepts_json_strings() -> None:
    assert add.validate('{"a": 1, "b": 5}').model_dump() == {"a": 1, "b": 5, "note": None}
    with pytest.raises(ToolArgumentsError, match="expected a JSON object"):
        add.validate("[1, 2]")


async def test_malformed_json_is_an_invalid_arguments_result() -> None:
    result = await add.run('{"a": 1,')
    assert error_of(result)["error"] == "invalid_arguments"
    assert "not valid JSON" in error_of(result)["message"] and "a (integer)" in error_of(result)["message"]
    assert (result.error_kind, result.attempts) == ("invalid_arguments", 0)


# --------------------------------------------------------------------------------------------------------------------
# Running: sync, async, failures, retries, truncation, secrets
# --------------------------------------------------------------------------------------------------------------------


async def test_sync_and_async_tools_run() -> None:
    @tool
    async def greet(name: str) -> dict[str, str]:
        """Greet someone."""
        await asyncio.sleep(0)
        return {"greeting": f"hello {name}"}

    sync_result = await add.run({"a": 3})
    assert (sync_result.ok, sync_result.content, sync_result.attempts) == (True, "5", 1)
    assert sync_result.args == {"a": 3, "b": 2, "note": None}
    async_result = await greet.run('{"name": "Ada"}')
    assert async_result.ok and json.loads(async_result.content) == {"greeting": "hello Ada"}


async def test_exception_becomes_a_result_and_the_run_goes_on() -> None:
    @tool
    def explode(reason: str) -> str:
        """Always fails."""
        raise RuntimeError(f"boom: {reason}")

    failed = await explode.run({"reason": "disk full"})
    assert error_of(failed) == {"error": "exception", "message": "RuntimeError: boom: disk full"}
    assert failed.error == "RuntimeError: boom: disk full" and failed.attempts == 1
    assert (await add.run({"a": 1, "b": 1})).content == "2"  # nothing is left broken


@pytest.mark.parametrize("is_async", [True, False])
async def test_timeout_is_a_result_and_comes_back_quickly(is_async: bool) -> None:
    async def slow_async(seconds: float) -> str:
        """Sleep."""
        await asyncio.sleep(seconds)
        return "done"

    def slow_sync(seconds: float) -> str:
        """Sleep."""
        time.sleep(seconds)
        return "done"

    slow = tool(timeout_s=0.2)(slow_async if is_async else slow_sync)
    started = time.perf_counter()
    # The sync one sleeps briefly: its thread cannot be killed and the test's loop waits for it at teardown.
    result = await slow.run({"seconds": 5.0 if is_async else 0.8})
    assert time.perf_counter() - started < 0.7
    assert error_of(result)["error"] == "timeout"
    assert "0.2s" in error_of(result)["message"]


async def test_retries_count_attempts() -> None:
    calls = 0

    @tool(retries=1)
    def flaky() -> str:
        """Fails on the first call only."""
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("transient")
        return "ok"

    result = await flaky.run({})
    assert (result.ok, result.content, result.attempts, calls) == (True, "ok", 2, 2)


async def test_retries_give_up_and_invalid_arguments_are_not_retried() -> None:
    calls = 0

    @tool(retries=2)
    def broken(x: int) -> int:
        """Always fails."""
        nonlocal calls
        calls += 1
        raise ValueError("nope")

    result = await broken.run({"x": 1})
    assert (result.attempts, calls) == (3, 3)
    assert "after 3 attempts" in error_of(result)["message"]
    invalid = await broken.run({"x": "not a number"})
    assert (invalid.error_kind, invalid.attempts, calls) == ("invalid_arguments", 0, 3)


async def test_long_results_are_truncated_with_a_note() -> None:
    @tool(max_result_tokens=50)
    def chatty() -> str:
        """Talks too much."""
        return "word " * 1000

    result = await chatty.run({})
    assert result.ok and result.truncated
    assert re.search(r"… \[truncated: 10\d\d tokens, showing 50\]$", result.content)
    assert count_text(result.content.rsplit("…", 1)[0], "gpt-4") <= 50
    assert result.content.startswith("word word")
    assert (await add.run({"a": 1})).truncated is False


async def test_secrets_are_masked_in_errors_results_and_args() -> None:
    key = "sk-abcdefghijklmnop1234"

    @tool
    def leaky(token: str) -> str:
        """Fails with a key in its message."""
        raise PermissionError(f"rejected key {token}")

    result = await leaky.run({"token": key})
    assert key not in result.content and key not in (result.error or "") and key not in json.dumps(result.args)
    assert "***" in result.content

    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text

    assert key not in (await echo.run({"text": f"key={key}"})).content


# --------------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------------


def test_registry_get_subset_and_errors() -> None:
    registry = ToolRegistry([add, calculator])
    assert registry.names() == ["add", "calculator"] and "add" in registry and len(registry) == 2
    assert registry.get("calculator") is calculator
    assert [s["name"] for s in registry.schemas()] == ["add", "calculator"]
    with pytest.raises(UnknownToolError, match="unknown tool 'nope'; known tools: add, calculator"):
        registry.get("nope")
    with pytest.raises(KeyError):
        registry.get("nope")
    allowed = registry.subset(["calculator"])
    assert allowed.names() == ["calculator"]
    with pytest.raises(HuddleError, match="ghost"):
        registry.subset(["calculator", "ghost"])
    with pytest.raises(HuddleError, match="already registered"):
        registry.register(tool(name="add", description="Another add.")(lambda: 0))


# --------------------------------------------------------------------------------------------------------------------
# Built-in tools
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"), [("17*23", 391), ("2**10", 1024), ("(1+2)/4", 0.75), ("-3 + 7 // 2", 0)]
)
async def test_calculator(expression: str, expected: float) -> None:
    result = await calculator.run({"expression": expression})
    assert result.ok, result.content
    assert json.loads(result.content) == expected
    assert type(json.loads(result.content)) is type(expected)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os')", "not allowed"),
        ("os.system", "not allowed"),
        ("x + 1", "not allowed"),
        ("10**10**10", "too large"),
        ("9**9**9", "too large"),
        ("1/0", "division by zero"),
        ("'a' * 3", "only numbers"),
        ("1 +", "not a valid"),
    ],
)
async def test_calculator_rejects_unsafe_or_huge(expression: str, reason: str) -> None:
    started = time.perf_counter()
    result = await calculator.run({"expression": expression})
    assert reason in error_of(result)["message"]
    assert time.perf_counter() - started < 1.0


async def test_clock_returns_the_current_year() -> None:
    result = await clock.run({})
    data = json.loads(result.content)
    assert data["year"] == datetime.now(timezone.utc).year
    assert data["timezone"] == "UTC" and data["date"].startswith(str(data["year"]))
    assert json.loads((await clock.run({"timezone": "Europe/Paris"})).content)["datetime"][-6:] in ("+01:00", "+02:00")
    assert "unknown timezone" in error_of(await clock.run({"timezone": "Mars/Olympus"}))["message"]


def notes_by_name(workspace: Path) -> dict[str, Tool]:
    return {t.name: t for t in make_notes_tools(workspace)}


async def test_notes_write_read_list(tmp_path: Path) -> None:
    notes = notes_by_name(tmp_path / "ws")
    assert json.loads((await notes["list_notes"].run({})).content) == []
    assert (await notes["write_note"].run({"name": "plan.md", "text": "step 1"})).ok
    assert (await notes["write_note"].run({"name": "research/sources.txt", "text": "a, b"})).ok
    assert (await notes["read_note"].run({"name": "plan.md"})).content == "step 1"
    listed = json.loads((await notes["list_notes"].run({})).content)
    assert listed == ["plan.md", "research/sources.txt"]
    assert notes["write_note"].side_effects == "write" and notes["read_note"].side_effects == "read"
    assert "no note named" in error_of(await notes["read_note"].run({"name": "missing.md"}))["message"]
    too_big = await notes["write_note"].run({"name": "big.txt", "text": "x" * (MAX_NOTE_BYTES + 1)})
    assert "too large" in error_of(too_big)["message"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [("../x", "'..'"), ("a/../../x", "'..'"), ("/etc/passwd", "absolute"), ("", "empty")],
)
async def test_notes_reject_paths_outside_the_workspace(tmp_path: Path, name: str, reason: str) -> None:
    notes = notes_by_name(tmp_path / "ws")
    for tool_name, args in (("write_note", {"name": name, "text": "pwned"}), ("read_note", {"name": name})):
        assert reason in error_of(await notes[tool_name].run(args))["message"]
    assert not (tmp_path / "x").exists()


async def test_notes_reject_symlink_escapes(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    (workspace / "link.txt").symlink_to(outside / "secret.txt")
    (workspace / "dir").symlink_to(outside, target_is_directory=True)
    notes = notes_by_name(workspace)
    for name in ("link.txt", "dir/secret.txt"):
        assert "outside the workspace" in error_of(await notes["read_note"].run({"name": name}))["message"]
    written = await notes["write_note"].run({"name": "dir/new.txt", "text": "escape"})
    assert "outside the workspace" in error_of(written)["message"]
    assert not (outside / "new.txt").exists()
    assert json.loads((await notes["list_notes"].run({})).content) == []


def test_builtin_registry() -> None:
    registry = builtin_registry(Path("ws"))
    assert registry.names() == ["calculator", "clock", "write_note", "read_note", "list_notes"]


# --------------------------------------------------------------------------------------------------------------------
# autogen
# --------------------------------------------------------------------------------------------------------------------


async def test_as_autogen_runs_inside_an_assistant_agent() -> None:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.messages import ToolCallExecutionEvent
    from autogen_core import FunctionCall
    from autogen_core.models import CreateResult, ModelInfo, RequestUsage
    from autogen_ext.models.replay import ReplayChatCompletionClient

    calls: list[str] = []

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        calls.append(key)
        if key == "bad":
            raise LookupError("no such key, sk-abcdefghijklmnop1234")
        return f"value of {key}"

    def call(call_id: str, name: str, arguments: str) -> CreateResult:
        return CreateResult(
            finish_reason="function_calls",
            content=[FunctionCall(id=call_id, name=name, arguments=arguments)],
            usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
            cached=False,
        )

    client = ReplayChatCompletionClient(
        [
            call("1", "lookup", '{"key": "alpha"}'),
            call("2", "lookup", '{"key": "bad"}'),
            call("3", "lookup", '{"wrong": 1}'),
            call("4", "calculator", '{"expression": "17*23"}'),
        ],
        model_info=ModelInfo(
            vision=False, function_calling=True, json_output=False, family="unknown", structured_output=False
        ),
    )
    agent = AssistantAgent("assistant", model_client=client, tools=[lookup.as_autogen(), calculator.as_autogen()])
    results = []
    for _ in range(4):
        run = await agent.run(task="go")
        events = [m for m in run.messages if isinstance(m, ToolCallExecutionEvent)]
        assert len(events) == 1
        results.append(events[0].content[0])
    assert calls == ["alpha", "bad"]  # the invalid call never reached the function
    assert (results[0].content, results[0].is_error) == ("value of alpha", False)
    assert results[1].is_error and json.loads(results[1].content)["error"] == "exception"
    assert "sk-abcdefghijklmnop1234" not in results[1].content and "***" in results[1].content
    assert results[2].is_error and "unexpected argument 'wrong'" in json.loads(results[2].content)["message"]
    assert (results[3].content, results[3].is_error) == ("391", False)
    assert run.messages[-1].to_text() == "391"
