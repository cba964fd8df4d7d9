"""``huddle serve`` as an A2A agent, driven by the real ``a2a-sdk`` client over HTTP against a real server.

What an integrator's agent would notice: each team's card names its members as skills and points at a JSON-RPC
endpoint that works; a message is a task that streams ``working`` updates (who speaks, why) and ends ``completed``
with the answer; the next message in the same ``contextId`` is the same conversation; ``tasks/get`` and
``tasks/cancel`` do what they say (a cancel saves the turn as cancelled); a second message while one is answered is
a JSON-RPC error, not a second answer racing the first; an unknown team is a 404.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from a2a.client import A2ACardResolver, A2AClientError, Client, ClientConfig, create_client
from a2a.helpers import get_artifact_text, get_message_text, new_text_message
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from a2a.utils.errors import InvalidParamsError, TaskNotFoundError, UnsupportedOperationError
from google.protobuf.json_format import MessageToDict

from huddle.config.settings import load_settings
from huddle.errors import HuddleError
from huddle.serve import app
from huddle.serve.keys import KeyAccess, KeyStore
from huddle.storage.sessions import SessionStore
from huddle.testing import Fault, RecordedRequest, Reply, Rule, ScriptedServer
from huddle.usage.budget import Budget
from tests.serving import scripted_settings, serving

PLAN = json.dumps({"goal": "answer", "steps": [], "done": True})
MEMBERS = ["planner", "tool_executor", "memory", "responder"]


def recall(request: RecordedRequest) -> Reply:
    """The responder names every user message it was shown, so a test can tell what the session remembered."""
    said = [str(m.get("content")).strip().splitlines()[-1] for m in request.messages if m.get("role") == "user"]
    slow = any("slowly" in line for line in said[-1:])
    return Reply(content="answer to: " + " | ".join(said), delay_s=3.0 if slow else 0.0)


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        server.add_rule(Rule(agent="planner", reply=Reply(content=PLAN)))
        server.add_rule(Rule(agent="responder", last="fail on purpose", fault=Fault(kind="server_error")))
        server.add_rule(Rule(agent="responder", reply=recall))
        yield server


@pytest.fixture
def served(scripted: ScriptedServer, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    settings = scripted_settings(tmp_path, scripted)
    with serving(app(settings, ["assistant"])) as url:
        yield url, settings.sessions_path


@asynccontextmanager
async def client_of(url: str, *, streaming: bool, key: str | None = None) -> AsyncIterator[Client]:
    """An a2a-sdk client of the assistant, found from its card (a first turn loads the team's models and memory,
    which on a busy test machine takes longer than the client's default 5 s timeout)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(timeout=60, headers=headers) as http:
        client = await create_client(f"{url}/a2a/assistant", ClientConfig(streaming=streaming, httpx_client=http))
        async with client:
            yield client


def message(text: str, context_id: str | None = None) -> SendMessageRequest:
    return SendMessageRequest(message=new_text_message(text, context_id=context_id, role=Role.ROLE_USER))


async def final_task(events: AsyncIterator[StreamResponse]) -> Task:
    async for event in events:
        if event.HasField("task"):
            return event.task
    raise AssertionError("no task came back")


async def test_each_team_card_names_its_members_as_skills_and_its_endpoint(served: tuple[str, Path]) -> None:
    url, _ = served
    async with httpx.AsyncClient() as http:
        card = await A2ACardResolver(http, f"{url}/a2a/assistant").get_agent_card()
        root = (await http.get(f"{url}/.well-known/agent-card.json")).json()
    assert card.name == "assistant" and "assistant" in card.description
    assert [skill.id for skill in card.skills] == MEMBERS
    assert all(skill.description for skill in card.skills)
    assert card.capabilities.streaming and card.version == __import__("huddle").__version__
    assert [(i.url, i.protocol_binding) for i in card.supported_interfaces] == [(f"{url}/a2a/assistant", "JSONRPC")]
    assert root["name"] == "assistant" and root["supportedInterfaces"][0]["url"] == f"{url}/a2a/assistant"


async def test_send_answers_as_a_completed_task_that_get_returns(served: tuple[str, Path]) -> None:
    url, _ = served
    async with client_of(url, streaming=False) as client:
        task = await final_task(client.send_message(message("What is the capital of France?")))
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert get_message_text(task.status.message) == "answer to: What is the capital of France?"
        assert [get_artifact_text(a) for a in task.artifacts] == ["answer to: What is the capital of France?"]
        fetched = await client.get_task(GetTaskRequest(id=task.id))
    assert fetched.id == task.id and fetched.context_id == task.context_id
    assert fetched.status.state == TaskState.TASK_STATE_COMPLETED
    assert get_message_text(fetched.history[0]) == "What is the capital of France?"
    result = MessageToDict(task.status.message.parts[1].data)["huddle"]
    assert result["kind"] == "result" and result["data"]["session_id"] == task.context_id


async def test_stream_shows_working_updates_with_team_events_then_completion(served: tuple[str, Path]) -> None:
    url, _ = served
    async with client_of(url, streaming=True) as client:
        events = [event async for event in client.send_message(message("Name a planet"))]
    assert events[0].HasField("task") and events[0].task.status.state == TaskState.TASK_STATE_SUBMITTED
    updates = [e.status_update for e in events if e.HasField("status_update")]
    states = [u.status.state for u in updates]
    assert states[-1] == TaskState.TASK_STATE_COMPLETED and TaskState.TASK_STATE_WORKING in states[:-1]
    kinds = [MessageToDict(u.status.message.parts[1].data)["huddle"]["kind"] for u in updates if u.status.message.parts]
    assert "speaker" in kinds and kinds[-1] == "result"
    meters = [MessageToDict(u.metadata)["huddle"] for u in updates if u.metadata.fields]
    assert meters and meters[-1]["kind"] == "usage" and meters[-1]["data"]["calls"] >= 1
    assert get_message_text(updates[-1].status.message) == "answer to: Name a planet"
    answers = [e.artifact_update for e in events if e.HasField("artifact_update")]
    assert answers and answers[-1].last_chunk and get_artifact_text(answers[-1].artifact) == "answer to: Name a planet"


async def test_a_run_without_an_answer_is_a_failed_task_with_the_reason(served: tuple[str, Path]) -> None:
    url, _ = served
    async with client_of(url, streaming=False) as client:
        task = await final_task(client.send_message(message("fail on purpose")))
    assert task.status.state == TaskState.TASK_STATE_FAILED
    assert "responder failed" in get_message_text(task.status.message) and not task.artifacts


async def test_the_same_context_id_continues_the_session(served: tuple[str, Path], scripted: ScriptedServer) -> None:
    url, sessions = served
    async with client_of(url, streaming=False) as client:
        first = await final_task(client.send_message(message("My name is Ada")))
        second = await final_task(client.send_message(message("What is my name?", first.context_id)))
        other = await final_task(client.send_message(message("Who am I?")))
    assert second.context_id == first.context_id and second.id != first.id
    remembered = get_message_text(second.status.message)
    assert remembered.startswith("answer to: My name is Ada | ") and remembered.endswith("What is my name?")
    last = [r for r in scripted.chat_requests if r.agent == "responder"][-2]  # the second turn's answer
    assert "My name is Ada" in json.dumps(last.messages) and "What is my name?" in json.dumps(last.messages)
    assert other.context_id != first.context_id
    assert get_message_text(other.status.message) == "answer to: Who am I?"
    with SessionStore(sessions) as store:
        assert [t.task for t in store.turns(first.context_id)] == ["My name is Ada", "What is my name?"]


async def test_cancel_stops_the_turn_and_the_session_saves_it_cancelled(served: tuple[str, Path]) -> None:
    url, sessions = served
    context_id = uuid.uuid4().hex
    async with client_of(url, streaming=True) as client:
        events = client.send_message(message("answer slowly", context_id))
        started = await anext(aiter(events))
        task_id = started.task.id
        cancelled = await client.cancel_task(CancelTaskRequest(id=task_id))
        await events.aclose()
        assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
        assert (await client.get_task(GetTaskRequest(id=task_id))).status.state == TaskState.TASK_STATE_CANCELED
        for _ in range(100):  # the hub saves the turn as the cancelled run unwinds
            with SessionStore(sessions) as store:
                turns = store.turns(context_id)
            if turns and turns[-1].status != "running":
                break
            await asyncio.sleep(0.05)
        assert [t.status for t in turns] == ["cancelled"]
        after = [event async for event in client.send_message(message("Still there?", context_id))]
    assert after[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED


async def test_a_second_message_while_the_session_answers_is_a_json_rpc_error(
    served: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = served
    context_id = uuid.uuid4().hex
    async with client_of(url, streaming=True) as streaming, client_of(url, streaming=False) as plain:
        events = streaming.send_message(message("answer slowly", context_id))
        await anext(aiter(events))
        with pytest.raises(UnsupportedOperationError) as refused:  # a failed precondition, as A2A says
            await final_task(plain.send_message(message("and another thing", context_id)))
        rest = [event async for event in events]
    assert "answering" in str(refused.value)
    assert refused.value.data == {"status": "409", "error": "SessionBusy"}
    assert not [record for record in caplog.records if record.exc_info]  # a refusal is no crash: no traceback
    assert rest[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED


async def test_v0_3_method_names_work_on_the_same_endpoint(served: tuple[str, Path]) -> None:
    url, _ = served
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "message/send",
        "params": {"message": {"role": "user", "messageId": "m1", "parts": [{"kind": "text", "text": "Hello"}]}},
    }
    async with httpx.AsyncClient(timeout=30) as http:
        reply = (await http.post(f"{url}/a2a/assistant", json=body)).json()
        task_id = reply["result"]["id"]
        got = await http.post(f"{url}/a2a/assistant", json={**body, "method": "tasks/get", "params": {"id": task_id}})
    assert reply["result"]["status"]["state"] == "completed"
    assert reply["result"]["artifacts"][0]["parts"][0]["text"] == "answer to: Hello"
    assert got.json()["result"]["status"]["state"] == "completed"


async def test_an_unknown_team_is_a_404(served: tuple[str, Path]) -> None:
    url, _ = served
    async with httpx.AsyncClient() as http:
        card = await http.get(f"{url}/a2a/nobody/.well-known/agent-card.json")
        rpc = await http.post(f"{url}/a2a/nobody", json={"jsonrpc": "2.0", "id": 1, "method": "GetTask"})
    for response in (card, rpc):
        assert response.status_code == 404
        assert "'nobody' is not served here; served: assistant" in response.json()["error"]["message"]
    with pytest.raises(A2AClientError):
        await create_client(f"{url}/a2a/nobody")


async def test_with_api_keys_tasks_and_sessions_belong_to_the_key(scripted: ScriptedServer, tmp_path: Path) -> None:
    settings = scripted_settings(tmp_path, scripted)
    with KeyStore.of(settings) as store:
        alice, bob = store.add("alice"), store.add("bob")
    with serving(app(settings, ["assistant"], access=KeyAccess.of(settings))) as url:
        # The card is public (clients read it to learn which key to send); the agent behind it is not.
        assert httpx.get(f"{url}/a2a/assistant/.well-known/agent-card.json").status_code == 200
        assert httpx.post(f"{url}/a2a/assistant", json={"jsonrpc": "2.0", "id": 1}).status_code == 401
        async with (
            client_of(url, streaming=False, key=alice) as mine,
            client_of(url, streaming=False, key=bob) as theirs,
        ):
            task = await final_task(mine.send_message(message("My secret is 42")))
            assert task.status.state == TaskState.TASK_STATE_COMPLETED
            with pytest.raises(TaskNotFoundError):
                await theirs.get_task(GetTaskRequest(id=task.id))
            with pytest.raises(InvalidParamsError) as refused:
                await final_task(theirs.send_message(message("What is the secret?", task.context_id)))
            assert refused.value.data == {"status": "404", "error": "SessionNotFound"}
            assert (await mine.get_task(GetTaskRequest(id=task.id))).status.state == TaskState.TASK_STATE_COMPLETED
        card = httpx.get(f"{url}/.well-known/agent-card.json").json()
    assert card["securitySchemes"]["huddle_api_key"]["httpAuthSecurityScheme"]["scheme"] == "bearer"


async def test_a_key_whose_session_budget_is_spent_gets_a_429_error_each_time(tmp_path: Path) -> None:
    with ScriptedServer(fallback=Reply(content="ok", usage=(200, 50))) as scripted:  # $0.0008 a call at this price
        scripted.add_rule(Rule(agent="planner", reply=Reply(content=PLAN, usage=(200, 50))))
        price = json.dumps({"input_per_mtok": 2.0, "output_per_mtok": 8.0})
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{scripted.base_url}', max_retries: 0, "
            f"price: {price}}}\ndata_dir: {tmp_path / 'data'}\n"
        )
        settings = load_settings(tmp_path / "huddle.yaml")
        with KeyStore.of(settings) as store:
            key = store.add("alice", usd_per_session=0.001)
        with serving(app(settings, ["assistant"], access=KeyAccess.of(settings))) as url:
            async with client_of(url, streaming=False, key=key) as client:
                first = await final_task(client.send_message(message("hello")))
                assert first.status.state == TaskState.TASK_STATE_COMPLETED
                refusals = []
                for text in ("more", "again", "and again"):  # the first two calls spend it
                    try:
                        await final_task(client.send_message(message(text, first.context_id)))
                    except UnsupportedOperationError as refused:
                        refusals.append(refused)
    assert len(refusals) >= 2 and all("has spent its $0.001 for this session" in str(r) for r in refusals)
    assert all(r.data == {"status": "429", "error": "KeyBudgetSpent"} for r in refusals)


class _Broke(KeyAccess):
    """The key policy letting the key claim the session, then finding no budget for the turn."""

    def budget(self, owner: str | None, session_id: str, budget: Budget) -> Budget:
        raise HuddleError("no budget left for this turn")


async def test_a_turn_refused_its_budget_is_an_error_and_leaves_the_session_usable(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    """A turn refused as it begins is an A2A error with the reason, and frees the session: the next message on it is
    refused the same way, not told the session is still answering (it was, for good, before the hub freed it)."""
    settings = scripted_settings(tmp_path, scripted)
    with KeyStore.of(settings) as store:
        key = store.add("alice")
    with serving(app(settings, ["assistant"], access=_Broke.of(settings))) as url:
        async with client_of(url, streaming=False, key=key) as client:
            refusals = []
            for _ in range(2):
                with pytest.raises(UnsupportedOperationError) as refused:
                    await final_task(client.send_message(message("hello", "ctx-1")))
                refusals.append(str(refused.value))
    assert refusals == ["no budget left for this turn"] * 2
