"""``huddle serve`` is safe to expose: API keys (stored hashed, revocable), sessions owned by their key, per-key
budgets, request limits, and no key in any response, log line or stored file.

Real parts throughout: the ``huddle`` command as a subprocess, the app on a real socket (`tests.serving`), httpx and
the openai SDK as clients, the scripted server (priced) as the model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from huddle.config.settings import Settings, load_settings
from huddle.errors import UsageError
from huddle.secrets import redact
from huddle.serve import app
from huddle.serve.guard import Guard, Limits
from huddle.serve.hub import Hub, SessionNotFound
from huddle.serve.keys import KeyAccess, KeyBudgetSpent, KeyStore, required
from huddle.testing import Reply, Rule, ScriptedServer
from huddle.usage import UsageLedger, UsageRecord
from huddle.usage.budget import Budget, Limit
from tests.serving import serving

PLAN = json.dumps({"goal": "answer", "steps": [], "done": True})
PRICE = {"input_per_mtok": 2.0, "output_per_mtok": 8.0}  # with usage (200, 50) a call costs $0.0008
KEY_SHAPE = re.compile(r"^hud_[0-9a-f]{12}_[A-Za-z0-9_\-]{43}$")


def huddle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huddle", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ),
    )


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer(fallback=Reply(content="ok", usage=(200, 50))) as server:
        server.add_rule(Rule(agent="planner", reply=Reply(content=PLAN, usage=(200, 50))))
        server.add_rule(Rule(agent="responder", reply=Reply(content="the answer", usage=(200, 50))))
        yield server


@pytest.fixture
def settings(scripted: ScriptedServer, tmp_path: Path) -> Settings:
    """The scripted server as a priced default profile, data under tmp_path."""
    config = tmp_path / "huddle.yaml"
    config.write_text(
        f"models:\n  default: {{model: scripted, base_url: '{scripted.base_url}', max_retries: 0, "
        f"price: {json.dumps(PRICE)}}}\ndata_dir: {tmp_path / 'data'}\n"
    )
    return load_settings(config)


async def answer(hub: Hub, task: str, owner: str | None, session_id: str | None = None) -> str:
    """Run one turn to its end; returns the session id."""
    turn = await hub.turn("assistant", task, session_id=session_id, owner=owner)
    async for _ in turn.events:
        pass
    return turn.session_id


# --- the store and the CLI ---


def test_cli_adds_lists_and_revokes_keys_and_stores_only_their_hash(isolated_env: Path) -> None:
    added = huddle("serve", "keys", "add", "alice", "--usd-per-day", "2.5", "--usd-per-session", "0.5")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert KEY_SHAPE.match(key), key
    listed = huddle("serve", "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["name"], row["usd_per_day"], row["usd_per_session"], row["revoked"]) == ("alice", 2.5, 0.5, None)
    assert key.split("_")[1] == row["id"] and key not in listed.stdout and "hash" not in row
    assert "alice" in huddle("serve", "keys", "list").stdout

    revoked = huddle("serve", "keys", "revoke", row["id"])
    assert revoked.returncode == 0 and row["id"] in revoked.stdout
    assert json.loads(huddle("serve", "keys", "list", "--json").stdout)[0]["revoked"] is not None
    unknown = huddle("serve", "keys", "revoke", "feedfacecafe")
    assert unknown.returncode == 1 and unknown.stderr.strip().count("\n") == 0
    assert "no API key 'feedfacecafe'" in unknown.stderr and "Traceback" not in unknown.stderr
    zero = huddle("serve", "keys", "add", "bob", "--usd-per-day", "0")
    assert zero.returncode == 2 and "--usd-per-day must be a positive number" in zero.stderr
    secret = key.split("_", 2)[2].encode()
    assert all(secret not in path.read_bytes() for path in isolated_env.rglob("*") if path.is_file())


def test_a_server_off_loopback_without_keys_refuses_to_start(isolated_env: Path) -> None:
    proc = huddle("serve", "--host", "0.0.0.0", "--port", "0")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "needs API keys: huddle serve keys add NAME" in proc.stderr


def test_keys_are_required_off_loopback_and_wherever_a_key_exists(settings: Settings) -> None:
    assert required(settings, "127.0.0.1") is False and required(settings, "::1") is False
    for host in ("0.0.0.0", "192.168.1.4", "::", "example.org"):
        with pytest.raises(UsageError, match="needs API keys"):
            required(settings, host)
    with KeyStore.of(settings) as store:
        key_id = store.add("alice").split("_")[1]
        assert required(settings, "0.0.0.0") and required(settings, "localhost")
        store.revoke(key_id)
    with pytest.raises(UsageError):  # only revoked keys: as good as none
        required(settings, "0.0.0.0")


def test_the_key_shape_is_masked_by_redact(settings: Settings) -> None:
    with KeyStore.of(settings) as store:
        key = store.add("alice")
    assert redact(f"got {key} here") == "got *** here"
    assert key not in redact(f"X-API-Key: {key}") and key not in redact(f"Authorization: Bearer {key}")


# --- over HTTP ---


@pytest.fixture
def keyed(settings: Settings) -> Iterator[tuple[str, dict[str, str]]]:
    """A served app with keys on; yields its URL and keys by name (carol's revoked)."""
    with KeyStore.of(settings) as store:
        keys = {name: store.add(name) for name in ("alice", "bob", "carol")}
        store.revoke(keys["carol"].split("_")[1])
    with serving(app(settings, ["assistant"], access=KeyAccess.of(settings))) as url:
        yield url, keys


def test_requests_without_a_valid_key_get_401_in_openai_shape(keyed: tuple[str, dict[str, str]]) -> None:
    url, keys = keyed
    for headers in ({}, {"Authorization": f"Bearer {keys['carol']}"}, {"X-API-Key": "hud_000000000000_nope"}):
        response = httpx.get(f"{url}/v1/models", headers=headers)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
        assert set(error) == {"message", "type", "param", "code"}
        assert keys["carol"] not in response.text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key=keys["carol"], max_retries=0).models.list()
    assert httpx.get(f"{url}/healthz").status_code == 200  # health checks and the page stay open
    assert httpx.get(f"{url}/").status_code != 401
    assert httpx.get(f"{url}/api/sessions", headers={"X-API-Key": keys["alice"]}).status_code == 200
    assert httpx.get(f"{url}/api/sessions", headers={"Authorization": f"Bearer {keys['bob']}"}).status_code == 200


async def test_another_keys_session_is_not_found(settings: Settings) -> None:
    with KeyStore.of(settings) as store:
        alice, bob = store.add("alice"), store.add("bob")
    alice_id, bob_id = alice.split("_")[1], bob.split("_")[1]
    hub = Hub(settings, ["assistant"], access=KeyAccess.of(settings))
    session = await answer(hub, "hello", alice_id)
    with pytest.raises(SessionNotFound):
        await hub.turn("assistant", "let me in", session_id=session, owner=bob_id)
    assert [s.id for s in hub.sessions(alice_id)] == [session] and hub.sessions(bob_id) == []
    await answer(hub, "again", alice_id, session)  # its owner goes on
    hub.close()
    with serving(app(settings, ["assistant"], access=KeyAccess.of(settings))) as url:
        theirs = httpx.get(f"{url}/api/sessions/{session}", headers={"X-API-Key": bob})
        mine = httpx.get(f"{url}/api/sessions/{session}", headers={"X-API-Key": alice})
    assert theirs.status_code == 404 and mine.status_code == 200


async def test_a_session_made_before_keys_is_nobodys(settings: Settings) -> None:
    hub = Hub(settings, ["assistant"])  # no keys: a loopback server
    session = await answer(hub, "hello", None)
    hub.close()
    with KeyStore.of(settings) as store:
        alice = store.add("alice").split("_")[1]
    access = KeyAccess.of(settings)
    with pytest.raises(SessionNotFound):
        access.claim(session, alice)
    access.claim("a-new-one", alice)
    assert access.owns("a-new-one", alice) and not access.owns(session, alice)
    access.close()


async def test_a_spent_daily_budget_refuses_the_next_turn_with_429(settings: Settings) -> None:
    with KeyStore.of(settings) as store:
        key = store.add("alice", usd_per_day=0.001)
        other = store.add("bob", usd_per_day=0.001)
    key_id = key.split("_")[1]
    hub = Hub(settings, ["assistant"], access=KeyAccess.of(settings))
    await answer(hub, "first", key_id)  # $0.0008 (one call): $0.0002 left
    await answer(hub, "second", key_id)  # its run may spend $0.0002; the answer's call may overshoot once
    assert hub.ledger.totals().cost_usd == pytest.approx(0.0016)
    with pytest.raises(KeyBudgetSpent) as refused:  # a new session: the day's budget is the key's, not a session's
        await hub.turn("assistant", "third", owner=key_id)
    assert refused.value.status == 429 and "for today" in str(refused.value)
    assert len(hub.ledger.records()) == 2  # refused before any call
    await answer(hub, "bob is fine", other.split("_")[1])
    hub.close()


async def test_a_spent_session_budget_refuses_that_session_only(settings: Settings) -> None:
    with KeyStore.of(settings) as store:
        key_id = store.add("alice", usd_per_session=0.001).split("_")[1]
    hub = Hub(settings, ["assistant"], access=KeyAccess.of(settings))
    session = await answer(hub, "first", key_id)
    await answer(hub, "second", key_id, session)  # under the session's $0.001, the answer overshooting once
    with pytest.raises(KeyBudgetSpent, match="for this session"):
        await hub.turn("assistant", "third", session_id=session, owner=key_id)
    await answer(hub, "a new session", key_id)
    hub.close()


def test_what_is_left_of_the_day_caps_the_runs_budget(settings: Settings) -> None:
    ledger = UsageLedger(settings.ledger_path)
    with KeyStore.of(settings) as store:
        key_id = store.add("alice", usd_per_day=1.0, usd_per_session=0.5).split("_")[1]
        store.claim("s1", key_id)
        store.claim("s2", key_id)
    yesterday = time.time() - 2 * 86_400
    for session, cost, ts in (("s1", 0.25, time.time()), ("s2", 0.05, time.time()), ("s1", 0.6, yesterday)):
        ledger.record(UsageRecord(agent="a", profile="p", model="m", session_id=session, cost_usd=cost, ts=ts))
    ledger.record(UsageRecord(agent="a", profile="p", model="m", session_id="not-hers", cost_usd=5.0))
    access = KeyAccess.of(settings)
    budget = access.budget(key_id, "s2", Budget(run=Limit(max_usd=2.0), session=Limit(max_tokens=1000)))
    assert budget.run.max_usd == pytest.approx(0.7)  # 1.0 a day, 0.3 spent today (yesterday's 0.6 does not count)
    assert (budget.session.max_usd, budget.session.max_tokens) == (0.5, 1000)
    assert access.budget(key_id, "s2", Budget(run=Limit(max_usd=0.1))).run.max_usd == 0.1
    assert access.budget(None, "s2", Budget()).run.max_usd == pytest.approx(0.7)  # the server redoing her turn
    assert access.budget(None, "not-hers", Budget()) == Budget()
    with pytest.raises(KeyBudgetSpent, match="for this session"):  # s1 spent 0.85 in all, over its 0.5
        access.claim("s1", key_id)
    ledger.record(UsageRecord(agent="a", profile="p", model="m", session_id="s2", cost_usd=0.75))
    with pytest.raises(KeyBudgetSpent, match="for today"):  # 1.05 today, on a new session too
        access.claim("s3", key_id)
    assert 0 < access.budget(key_id, "s3", Budget()).run.max_usd < 1e-6  # spent after its turn was admitted
    access.close()
    ledger.close()


def test_openai_clients_get_404_for_another_keys_session_and_429_when_the_day_is_spent(settings: Settings) -> None:
    with KeyStore.of(settings) as store:
        alice, bob = store.add("alice", usd_per_day=0.001), store.add("bob")
    with serving(app(settings, ["assistant"], access=KeyAccess.of(settings))) as url:
        mine, theirs = (openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) for key in (alice, bob))
        ask: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
        first = mine.chat.completions.with_raw_response.create(model="assistant", messages=ask)
        session = first.headers["X-Huddle-Session"]
        with pytest.raises(openai.NotFoundError):
            theirs.chat.completions.create(
                model="assistant",
                messages=ask,
                extra_headers={"X-Huddle-Session": session},
            )
        stream = mine.chat.completions.create(model="assistant", messages=ask, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "the answer"
        with pytest.raises(openai.RateLimitError) as refused:
            mine.chat.completions.create(model="assistant", messages=ask)
        error = refused.value.response.json()["error"]
        assert refused.value.status_code == 429 and set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
        assert theirs.chat.completions.create(model="assistant", messages=ask).choices[0].message.content
        for key in (alice, bob):
            assert key not in refused.value.response.text and key not in first.http_response.text


def test_huddle_serve_with_a_key_requires_it_and_never_logs_it(isolated_env: Path) -> None:
    key = huddle("serve", "keys", "add", "alice").stdout.strip()
    server = subprocess.Popen(
        [sys.executable, "-m", "huddle", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert server.stdout is not None
        url = re.search(r"http://\S+", server.stdout.readline())
        assert url is not None
        base = url.group(0)
        for _ in range(100):  # the port is bound before the app has started
            try:
                httpx.get(f"{base}/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(f"{base}/v1/models").status_code == 401  # loopback, but a key exists: keys are on
        assert httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert httpx.get(f"{base}/v1/models", headers={"X-API-Key": key + "x"}).status_code == 401
    finally:
        server.terminate()
        out, err = server.communicate(timeout=60)
    assert '"path": "/v1/models", "status": 401' in out  # the access log saw the requests, and not the key
    assert key.split("_", 2)[2] not in out + err


# --- the guard: limits, streaming, the key kept from the endpoints ---


def _guarded(verify: dict[str, str] | None, released: threading.Event) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse(
            {
                "owner": request.state.owner,
                "size": len(body),
                "saw_key": any(h in request.headers for h in ("authorization", "x-api-key")),
            }
        )

    async def stream(_: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first\n"
            for _ in range(100):
                if released.is_set():
                    break
                await asyncio.sleep(0.05)
            yield b"after release\n" if released.is_set() else b"timed out\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    routes = [Route("/echo", echo, methods=["POST"]), Route("/stream", stream)]
    check = verify.get if verify is not None else None
    return Starlette(routes=routes, middleware=[Middleware(Guard, verify=check, limits=Limits(1000, 3))])


def test_the_guard_streams_unbuffered_and_limits_bodies_and_messages() -> None:
    released = threading.Event()
    with serving(_guarded({"k1": "id1"}, released)) as url, httpx.Client(base_url=url) as client:
        with client.stream("GET", "/stream", headers={"X-API-Key": "k1"}) as response:
            lines = response.iter_lines()
            assert next(lines) == "first"  # before the endpoint was let go: nothing held back
            released.set()
            assert next(lines) == "after release"
        body = b'{"messages": [1, 2, 3]}'
        seen = client.post("/echo", content=body, headers={"Authorization": "Bearer k1"}).json()
        assert seen == {"owner": "id1", "size": len(body), "saw_key": False}  # the body whole, the key taken out
        assert client.post("/echo", json={"messages": []}).status_code == 401
        too_many = client.post("/echo", json={"messages": [1, 2, 3, 4]}, headers={"X-API-Key": "k1"})
        assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "messages"
        assert client.post("/echo", json={"input": list(range(4))}, headers={"X-API-Key": "k1"}).status_code == 400
        big = client.post("/echo", content=b"x" * 1001, headers={"X-API-Key": "k1"})
        assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
        chunked = client.post("/echo", content=iter([b"x" * 600, b"x" * 600]), headers={"X-API-Key": "k1"})
        assert chunked.status_code == 413
        assert client.post("/echo", content=b"x" * 1000, headers={"X-API-Key": "k1"}).json()["size"] == 1000


def test_without_keys_the_guard_still_limits_and_the_owner_is_none() -> None:
    with serving(_guarded(None, threading.Event())) as url:
        assert httpx.post(f"{url}/echo", json={"a": 1}).json()["owner"] is None
        assert httpx.post(f"{url}/echo", content=b"x" * 2000).status_code == 413


def test_the_key_appears_in_no_log_line_or_stored_file(
    keyed: tuple[str, dict[str, str]], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    url, keys = keyed
    caplog.set_level(logging.DEBUG)
    for key in (keys["alice"], keys["carol"], "hud_0123456789ab_guessedguessedguessedguessed"):
        httpx.get(f"{url}/api/sessions", headers={"Authorization": f"Bearer {key}"})
        httpx.get(f"{url}/api/sessions/none", headers={"X-API-Key": key})
    logged = "\n".join(record.getMessage() for record in caplog.records)
    secrets_ = [key.split("_", 2)[2] for key in keys.values()]
    assert all(secret not in logged for secret in secrets_)
    stored = [path.read_bytes() for path in settings.data_dir.rglob("*") if path.is_file()]
    assert all(secret.encode() not in blob for secret in secrets_ for blob in stored)
