"""Record/replay: a suite recorded once replays in another process with the network switched off; a request the
cassette does not have fails loudly, naming the agent and the first differing message."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from autogen_core.models import CreateResult, RequestUsage, SystemMessage, UserMessage
from autogen_ext.models.replay import ReplayChatCompletionClient

from huddle.config.settings import ModelProfile
from huddle.evals.cassette import Cassette, CassetteMiss, cassette_scope
from tests.test_scenarios import EXAMPLES, scenario

# The real root CLI with the scenario sub-app registered, and every socket connect refused: replay needs no model,
# no server and no network.
CHILD = """
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("network disabled by the test")

socket.socket.connect = refuse
from huddle.cli import app as cli
from huddle.cli.scenario import scenario_app

if not any(group.name == "scenario" for group in cli.app.registered_groups):
    cli.app.add_typer(scenario_app, name="scenario")
cli.run(sys.argv[1:])
"""
PICKED = ["refund-damaged-item.yaml", "remembered-order-number.yaml"]


def offline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, "scenario", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_a_recorded_suite_replays_offline_in_another_process(tmp_path: Path) -> None:
    cassette = tmp_path / "support.cassette.json"
    recorded = scenario("run", *(str(EXAMPLES / name) for name in PICKED), "--json", "--record", str(cassette))
    assert recorded.exit_code == 0, recorded.output
    saved = json.loads(cassette.read_text())
    # the refund's responder speaks once (on the approval), the remembered order's twice
    assert {e["agent"] for e in saved["entries"]} == {"responder"} and len(saved["entries"]) == 3
    assert saved["profiles"]["rules:scripted"]["base_url"].startswith("http://127.0.0.1:")

    replayed = offline("run", *(str(EXAMPLES / name) for name in PICKED), "--json", "--replay", str(cassette))

    assert replayed.returncode == 0, replayed.stderr
    first, second = json.loads(recorded.stdout), json.loads(replayed.stdout)
    assert second["passed"] and second["pass_hat_k"] == {"1": 1.0}
    replies = [[t["replies"] for t in s["trials"]] for s in first["scenarios"]]
    assert replies == [[t["replies"] for t in s["trials"]] for s in second["scenarios"]]
    assert second["tokens"] == first["tokens"]  # the recorded usage, metered again at no cost


def test_a_request_missing_from_the_cassette_fails_loudly(tmp_path: Path) -> None:
    folder = tmp_path / "support"
    shutil.copytree(EXAMPLES, folder)
    cassette = tmp_path / "c.json"
    assert scenario("run", str(folder / "refund-damaged-item.yaml"), "--record", str(cassette)).exit_code == 0
    changed = folder / "refund-damaged-item.yaml"
    # the customer's "yes" is the approval, not a message the responder reads: change what they asked for instead
    changed.write_text(changed.read_text().replace("I want my money back.", "I want my money back, please."))

    result = scenario("run", str(changed), "--replay", str(cassette))

    assert result.exit_code == 1
    error = result.stdout[result.stdout.index("refund-damaged-item #1 error:") :]
    assert f"cassette {cassette}: agent 'responder' (refund-damaged-item#1): request not in the cassette" in error
    # the responder's one request (after the approval): its findings, #1 after the system prompt, differ
    assert "first differing message: #1 (UserMessage)" in error and "re-record" in error
    assert "0 passed, 0 failed, 1 errors" in result.stdout


def test_an_unreadable_cassette_is_a_config_error(tmp_path: Path) -> None:
    result = scenario("run", str(EXAMPLES / "order-status.yaml"), "--replay", str(tmp_path / "none.json"))
    assert result.exit_code == 2 and "no such cassette" in result.stderr


QUESTION = [SystemMessage(content="You are terse."), UserMessage(content="Where is order 1042?", source="user")]


async def test_record_and_replay_one_client_call_and_stream(tmp_path: Path) -> None:
    profile = ModelProfile(name="p", provider="scripted", replies=["x"], price={"input_per_mtok": 1.0})
    answer = CreateResult(
        finish_reason="stop",
        content="It shipped.",
        usage=RequestUsage(prompt_tokens=9, completion_tokens=3),
        cached=False,
    )
    recorder = Cassette.record(tmp_path / "c.json")
    live = recorder.wrap(ReplayChatCompletionClient([answer, "It is on its way."]), profile, "responder")
    with cassette_scope("t1"):
        created = await live.create(QUESTION)
        streamed = [item async for item in live.create_stream(QUESTION, extra_create_args={"max_tokens": 5})]
    recorder.save()

    player = Cassette.replay(tmp_path / "c.json")
    offline_client = player.wrap(ReplayChatCompletionClient([]), profile, "responder")  # empty: it must never be asked
    with cassette_scope("t1"):
        assert await offline_client.create(QUESTION) == created
        assert [item async for item in offline_client.create_stream(QUESTION, extra_create_args={"max_tokens": 5})] == (
            streamed
        )
        with pytest.raises(CassetteMiss, match=r"first differing message: #1 \(UserMessage\) at character 17"):
            await offline_client.create([QUESTION[0], UserMessage(content="Where is order 1017?", source="user")])
        with pytest.raises(CassetteMiss, match="the messages are the same but extra_create_args differs"):
            await offline_client.create(QUESTION, extra_create_args={"temperature": 1})
    other_agent = player.wrap(ReplayChatCompletionClient([]), profile, "planner")
    with pytest.raises(CassetteMiss, match="no request of this agent was recorded"):
        await other_agent.create(QUESTION)
    assert [m.agent for m in player.misses] == ["responder", "responder", "planner"]
    assert player.stand_in_profiles()["p"].price.input_per_mtok == 1.0


async def test_a_key_pasted_into_a_prompt_is_masked_in_the_cassette_and_still_replays(tmp_path: Path) -> None:
    """A cassette is made to be committed: a pasted key (and one echoed in a reply) never reaches the file."""
    profile = ModelProfile(name="p", provider="scripted", replies=["x"])
    pasted = [UserMessage(content="my key is sk-abcdefghijklmnop, why does it fail?", source="user")]
    recorder = Cassette.record(tmp_path / "c.json")
    live = recorder.wrap(ReplayChatCompletionClient(["Key sk-abcdefghijklmnop is revoked."]), profile, "responder")
    await live.create(pasted)
    recorder.save()

    saved = (tmp_path / "c.json").read_text(encoding="utf-8")
    assert "sk-abcdefghijklmnop" not in saved and "***" in saved
    player = Cassette.replay(tmp_path / "c.json")
    replayed = await player.wrap(ReplayChatCompletionClient([]), profile, "responder").create(pasted)
    assert replayed.content == "Key *** is revoked."
