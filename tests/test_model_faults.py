"""Faults at the model layer have a clear outcome: a retried stream shows each character once, server usage that
cannot be right is not billed, a cancelled call is metered, and closing a client closes everything it opened."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from autogen_agentchat.messages import ModelClientStreamingChunkEvent
from autogen_core import CancellationToken
from autogen_core.models import CreateResult, RequestUsage, UserMessage
from autogen_ext.models.replay import ReplayChatCompletionClient
from rich.console import Console

from huddle.cli.console import Transcript
from huddle.config.settings import ModelProfile, Price
from huddle.models.factory import build_client
from huddle.models.metering import MeteredClient
from huddle.models.streaming import STREAM_RESET
from huddle.testing import Fault, Reply, Rule, ScriptedServer
from huddle.usage import UsageLedger

KEY = "sk-test-abcdefghijklmnop"
TEXT = "The quick brown fox jumps over the lazy dog"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


@pytest.fixture
def profile(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> ModelProfile:
    monkeypatch.setenv("HUDDLE_TEST_KEY", KEY)
    return ModelProfile(
        name="primary",
        model="scripted",
        base_url=server.base_url,
        api_key_env="HUDDLE_TEST_KEY",
        price=Price(input_per_mtok=1.0, output_per_mtok=2.0),
        max_retries=2,
        timeout_s=10,
    )


async def streamed(profile: ModelProfile, ledger: UsageLedger) -> tuple[list[str], CreateResult]:
    client = build_client(profile, ledger, agent="a")
    items = [item async for item in client.create_stream([UserMessage(content="say it", source="user")])]
    await client.close()
    final = items[-1]
    assert isinstance(final, CreateResult)
    return [i for i in items if isinstance(i, str)], final


async def test_a_retried_stream_delivers_each_character_once(server: ScriptedServer, profile: ModelProfile) -> None:
    server.add_rule(Rule(times=1, reply=Reply(content=TEXT), fault=Fault(kind="cut_stream")))
    server.add_rule(Rule(reply=Reply(content=TEXT)))
    ledger = UsageLedger()
    chunks, final = await streamed(profile, ledger)
    assert len(server.chat_requests) == 2  # the stream was cut, then retried
    assert "".join(chunks) == TEXT and final.content == TEXT and STREAM_RESET not in chunks


async def test_a_retry_that_says_something_else_resets_the_stream(
    server: ScriptedServer, profile: ModelProfile
) -> None:
    server.add_rule(Rule(times=1, reply=Reply(content=TEXT), fault=Fault(kind="cut_stream")))
    server.add_rule(Rule(reply=Reply(content="A slow green turtle")))
    chunks, final = await streamed(profile, UsageLedger())
    assert chunks.count(STREAM_RESET) == 1
    after = chunks[chunks.index(STREAM_RESET) + 1 :]
    assert "".join(after) == "A slow green turtle" == final.content


def test_the_console_starts_the_answer_again_on_a_reset() -> None:
    out = io.StringIO()
    shown = Transcript(Console(file=out, width=200), "responder", verbosity="normal", status=None, team="t")
    for chunk in ["The quick ", STREAM_RESET, "A slow ", "turtle"]:
        shown.show(ModelClientStreamingChunkEvent(content=chunk, source="responder"))
    shown.close()
    assert out.getvalue() == "responder> The quick \nresponder> A slow turtle\n"


async def test_absurd_server_usage_is_replaced_by_the_estimate(server: ScriptedServer, profile: ModelProfile) -> None:
    server.add_rule(Rule(reply=Reply(content="fine", usage=(10**9, 10**9))))
    ledger = UsageLedger()
    client = build_client(profile, ledger, agent="a")
    result = await client.create([UserMessage(content="hi", source="user")])
    row = ledger.records()[0]
    assert row.token_source == "estimate" and 0 < row.prompt_tokens < 50 and 0 < row.completion_tokens < 10
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (row.prompt_tokens, row.completion_tokens)


async def test_negative_server_usage_never_lowers_the_bill(profile: ModelProfile) -> None:
    """A server reporting -8 billion completion tokens put -$16,000 in the ledger and let calls through a budget."""
    negative = CreateResult(
        finish_reason="stop",
        content="fine",
        usage=RequestUsage(prompt_tokens=5, completion_tokens=-8 * 10**9),
        cached=False,
    )
    ledger = UsageLedger()
    inner = ReplayChatCompletionClient([negative, negative])
    client = MeteredClient(inner, ledger=ledger, profile=profile, count_text=lambda text: len(text.split()))
    for _ in range(2):
        await client.create([UserMessage(content="hi there", source="user")])
    rows = ledger.records()
    assert [r.token_source for r in rows] == ["estimate", "estimate"]
    assert all(r.completion_tokens == 1 and r.cost_usd > 0 for r in rows)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_cancelled_call_is_metered_for_the_prompt_it_sent(
    server: ScriptedServer, profile: ModelProfile, stream: bool
) -> None:
    server.add_rule(Rule(reply=Reply(content="too late", delay_s=5)))
    ledger = UsageLedger()
    client = build_client(profile, ledger, agent="a")
    token = CancellationToken()
    messages = [UserMessage(content="a question that is sent, then cancelled", source="user")]

    async def call() -> None:
        if stream:
            async for _ in client.create_stream(messages, cancellation_token=token):
                pass
        else:
            await client.create(messages, cancellation_token=token)

    task = asyncio.ensure_future(call())
    while not server.chat_requests:
        await asyncio.sleep(0.02)
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.close()
    [row] = ledger.records()
    assert row.token_source == "estimate" and row.prompt_tokens == client.count_tokens(messages) > 0
    assert row.cost_usd > 0 and "CancelledError" in (row.error or "")


def open_files() -> set[str]:
    """What this process has open: sockets and files (the cache's SQLite database) by their targets."""
    fds = Path("/proc/self/fd")
    targets = set()
    for fd in fds.iterdir():
        try:
            targets.add(f"{fd.name}:{os.readlink(fd)}")
        except OSError:
            continue  # closed while listing (the listing's own descriptor)
    return targets


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
async def test_closing_a_client_closes_its_fallbacks_and_caches(
    server: ScriptedServer, profile: ModelProfile, tmp_path: Path
) -> None:
    server.add_rule(Rule(times=1, fault=Fault(kind="server_error")))
    server.add_rule(Rule(reply=Reply(content="from the backup")))
    primary = profile.model_copy(update={"max_retries": 0, "fallback": "backup"})
    backup = profile.model_copy(update={"name": "backup", "model": "secondary"})
    before = open_files()
    client = build_client(
        primary, UsageLedger(), agent="a", profiles={"primary": primary, "backup": backup}, cache_dir=tmp_path
    )
    result = await client.create([UserMessage(content="hi", source="user")])
    assert result.content == "from the backup"
    assert any(str(tmp_path) in target for target in open_files() - before)  # the caches' databases are open
    await client.close()
    for _ in range(50):  # the server's side of a connection closes a moment after the client's
        if not open_files() - before:
            break
        await asyncio.sleep(0.05)
    assert open_files() - before == set()
