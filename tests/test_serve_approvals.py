"""Approvals through ``huddle serve``: a tool call under ``approval: always`` pauses the turn on every surface (the
approve endpoint, AG-UI's interrupt, the OpenAI endpoints' waiting message, A2A's ``input-required``), and the
decision sent back the surface's own way resumes it: the tool runs once (counted in a file) and the answer arrives.
Real clients over real HTTP, the team's model a scripted server."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_data_parts, get_message_text, new_data_part, new_message, new_text_message
from a2a.types import Role, SendMessageRequest, Task, TaskState
from ag_ui.core import RunErrorEvent, RunFinishedEvent, ToolCallResultEvent, ToolCallStartEvent

from huddle.agents.approval import ApprovalDecision
from huddle.serve import app
from huddle.serve.hub import DecisionsRefused, Hub, SessionBusy, SessionNotFound
from huddle.testing import RecordedRequest, Reply, Rule, ScriptedServer
from tests.serving import scripted_settings, serving
from tests.test_approvals import TOOLS
from tests.test_serve_agui import post_run, run_input

TEAM = """
team: {name: calc, plan: always}
agents:
  - {role: planner}
  - {role: tool_executor, tools: ['serve_approval_tools:bump'], approval: always}
  - {role: responder}
"""
PLAN = json.dumps(
    {
        "goal": "bump it",
        "steps": [
            {
                "id": 1,
                "assignee": "tool_executor",
                "instruction": "bump the counter",
                "tool": "bump",
                "args": json.dumps({"note": "hello"}),
                "depends_on": [],
            }
        ],
        "done": False,
    }
)


def echo(request: RecordedRequest) -> Reply:
    """The responder says what it was sent, so a test sees the tool's result (or the denial) reach it."""
    return Reply(content=f"Answer from: {request.last_text}")


def count() -> int:
    path = Path("count.txt")
    return int(path.read_text()) if path.exists() else 0


@dataclass
class Served:
    url: str
    server: ScriptedServer


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The calc team, its tool under ``approval: always``, served over HTTP."""
    (tmp_path / "serve_approval_tools.py").write_text(TOOLS)
    (tmp_path / "team.yaml").write_text(TEAM)
    sys.path.insert(0, str(tmp_path))
    rules = [Rule(agent="planner", reply=Reply(content=PLAN)), Rule(agent="responder", reply=echo)]
    try:
        with (
            ScriptedServer(rules=rules) as server,
            serving(app(scripted_settings(tmp_path, server), ["team.yaml"])) as url,
        ):
            yield Served(url, server)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("serve_approval_tools", None)


def paused_agui(served: Served, thread_id: str) -> list[dict[str, Any]]:
    """Send the task over AG-UI; the run must end paused: RUN_FINISHED with the interrupt outcome, the tool not run."""
    events = post_run(served.url, run_input("bump the counter", thread_id))
    last = events[-1]
    assert isinstance(last, RunFinishedEvent), last
    outcome = last.model_dump(mode="json", by_alias=True, exclude_none=True)["outcome"]
    assert outcome["type"] == "interrupt" and count() == 0
    return outcome["interrupts"]  # type: ignore[no-any-return]


def test_the_approve_endpoint_resumes_the_paused_turn_and_the_tool_runs_once(served: Served) -> None:
    thread_id = uuid.uuid4().hex
    [interrupt] = paused_agui(served, thread_id)
    turns = httpx.get(f"{served.url}/api/sessions/{thread_id}").json()
    assert turns[-1]["status"] == "awaiting_approval"
    [call] = turns[-1]["pending"]
    assert (call["id"], call["tool"], call["args"], call["agent"]) == (
        interrupt["id"],
        "bump",
        {"note": "hello"},
        "tool_executor",
    )
    wrong = httpx.post(
        f"{served.url}/api/sessions/{thread_id}/approve", json={"decisions": {"call_x": {"action": "approve"}}}
    )
    assert wrong.status_code == 422 and "call_x" in wrong.json()["error"]["message"]
    bad = httpx.post(
        f"{served.url}/api/sessions/{thread_id}/approve", json={"decisions": {call["id"]: {"action": "ok"}}}
    )
    assert bad.status_code == 422 and "action" in bad.json()["error"]["message"]
    unknown = httpx.post(
        f"{served.url}/api/sessions/nope/approve", json={"decisions": {call["id"]: {"action": "approve"}}}
    )
    assert unknown.status_code == 404
    assert count() == 0
    body = httpx.post(
        f"{served.url}/api/sessions/{thread_id}/approve",
        json={"decisions": {call["id"]: {"action": "approve"}}},
        timeout=60,
    ).json()
    assert count() == 1
    assert "counter is 1 (hello)" in body["answer"] and body["pending"] == [] and body["session_id"] == thread_id
    again = httpx.post(
        f"{served.url}/api/sessions/{thread_id}/approve", json={"decisions": {call["id"]: {"action": "approve"}}}
    )
    assert again.status_code == 422 and count() == 1  # nothing waits any more: it never runs twice
    assert httpx.get(f"{served.url}/api/sessions/{thread_id}").json()[-1]["status"] == "done"


def test_agui_interrupts_with_the_call_and_a_resume_runs_it_once(served: Served) -> None:
    thread_id = uuid.uuid4().hex
    events = post_run(served.url, run_input("bump the counter", thread_id))
    [interrupt] = paused_agui(served, uuid.uuid4().hex)  # a second session pauses alike
    started = [e for e in events if isinstance(e, ToolCallStartEvent)]
    assert [e.tool_call_name for e in started] == ["bump"]
    assert not any(isinstance(e, ToolCallResultEvent) for e in events)  # it waits: no result
    outcome = events[-1].model_dump(mode="json", by_alias=True, exclude_none=True)["outcome"]
    [mine] = outcome["interrupts"]
    assert mine["id"] == mine["toolCallId"] == started[0].tool_call_id != interrupt["id"]
    assert (mine["reason"], mine["message"]) == ("approval", "tool_executor wants to run bump")
    assert {k: mine["metadata"][k] for k in ("tool", "args", "agent", "step_id")} == {
        "tool": "bump",
        "args": {"note": "hello"},
        "agent": "tool_executor",
        "step_id": 1,
    }
    resume = [{"interruptId": mine["id"], "status": "resolved", "payload": {"action": "approve"}}]
    resumed = post_run(served.url, run_input("", thread_id, resume=resume))
    assert count() == 1
    results = [e for e in resumed if isinstance(e, ToolCallResultEvent)]
    assert len(results) == 1 and "counter is 1 (hello)" in results[0].content
    last = resumed[-1]
    assert isinstance(last, RunFinishedEvent) and last.outcome is None
    assert last.result is not None and "counter is 1 (hello)" in last.result["answer"]
    again = httpx.post(f"{served.url}/agui/calc", json=run_input("", thread_id, resume=resume))
    assert again.status_code == 422 and count() == 1


def test_agui_a_cancelled_interrupt_is_a_denial(served: Served) -> None:
    thread_id = uuid.uuid4().hex
    [interrupt] = paused_agui(served, thread_id)
    resume = [{"interruptId": interrupt["id"], "status": "cancelled", "payload": {"reason": "not today"}}]
    resumed = post_run(served.url, run_input("", thread_id, resume=resume))
    last = resumed[-1]
    assert not isinstance(last, RunErrorEvent) and isinstance(last, RunFinishedEvent)
    assert count() == 0 and last.result is not None and "not today" in last.result["answer"]


def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)


def test_a_plain_openai_client_is_asked_and_approves_with_a_reply(served: Served) -> None:
    """A stateless client: it resends the history, the waiting message in it; 'approve' takes the turn up."""
    asked = [{"role": "user", "content": "bump the counter"}]
    waiting = client(served).chat.completions.with_raw_response.create(model="calc", messages=asked)  # type: ignore[arg-type]
    body = waiting.parse()
    text = body.choices[0].message.content or ""
    [call] = (body.model_extra or {})["huddle"]["pending"]
    assert body.choices[0].finish_reason == "stop" and count() == 0
    assert text.startswith("Waiting for your approval: bump(") and f"[call {call['id']}]" in text
    assert "Reply 'approve' or 'deny <reason>'" in text
    history = [*asked, {"role": "assistant", "content": text}, {"role": "user", "content": "Approve"}]
    answer = client(served).chat.completions.with_raw_response.create(model="calc", messages=history)  # type: ignore[arg-type]
    assert answer.headers["X-Huddle-Session"] == waiting.headers["X-Huddle-Session"]
    assert count() == 1 and "counter is 1 (hello)" in (answer.parse().choices[0].message.content or "")
    assert (answer.parse().model_extra or {})["huddle"]["pending"] == []


def test_a_denial_through_the_openai_sdk_reaches_the_model_and_the_tool_never_runs(served: Served) -> None:
    session = {"X-Huddle-Session": uuid.uuid4().hex}
    first = client(served).responses.create(model="calc", input="bump the counter", extra_headers=session)
    assert first.output_text.startswith("Waiting for your approval: bump(") and first.status == "completed"
    assert client(served).responses.retrieve(first.id).output_text == first.output_text
    with client(served).responses.stream(
        model="calc", input="deny not on a Sunday", previous_response_id=first.id
    ) as stream:
        denied = stream.get_final_response()
    assert count() == 0 and "not on a Sunday" in denied.output_text
    turns = httpx.get(f"{served.url}/api/sessions/{session['X-Huddle-Session']}").json()
    assert [t["status"] for t in turns] == ["done"] and turns[0]["task"] == "bump the counter"


def test_any_other_reply_is_a_new_message_and_the_paused_call_never_runs(served: Served) -> None:
    session = {"X-Huddle-Session": uuid.uuid4().hex}
    messages: Any = [{"role": "user", "content": "bump the counter"}]
    client(served).chat.completions.create(model="calc", messages=messages, extra_headers=session)
    messages = [{"role": "user", "content": "yes, but only half"}]
    chunks = list(
        client(served).chat.completions.create(model="calc", messages=messages, extra_headers=session, stream=True)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Waiting for your approval: bump(")  # the new message paused on its own call
    turns = httpx.get(f"{served.url}/api/sessions/{session['X-Huddle-Session']}").json()
    assert [t["status"] for t in turns] == ["cancelled", "awaiting_approval"] and count() == 0


async def a2a_task(url: str, request: SendMessageRequest) -> Task:
    """Send one message with the a2a-sdk client (found from the team's card); the task as it last stood (a message
    on a task that already exists gets only its status updates back)."""
    task = Task()
    async with httpx.AsyncClient(timeout=60) as http:
        client = await create_client(f"{url}/a2a/calc", ClientConfig(streaming=True, httpx_client=http))
        async with client:
            async for event in client.send_message(request):
                if event.HasField("task"):
                    task.CopyFrom(event.task)
                elif event.HasField("status_update"):
                    task.id, task.context_id = event.status_update.task_id, event.status_update.context_id
                    task.status.CopyFrom(event.status_update.status)
    assert task.id
    return task


async def test_a2a_asks_for_input_then_completes_after_a_decisions_message(served: Served) -> None:
    ask = SendMessageRequest(message=new_text_message("bump the counter", role=Role.ROLE_USER))
    paused = await a2a_task(served.url, ask)
    assert paused.status.state == TaskState.TASK_STATE_INPUT_REQUIRED and count() == 0
    assert get_message_text(paused.status.message).startswith("Waiting for your approval: bump(")
    [data] = get_data_parts(paused.status.message.parts)
    [call] = data["pending"]
    assert (call["tool"], call["args"], call["agent"]) == ("bump", {"note": "hello"}, "tool_executor")
    decide = new_data_part({"decisions": {call["id"]: {"action": "approve"}}})
    reply = new_message([decide], context_id=paused.context_id, task_id=paused.id, role=Role.ROLE_USER)
    done = await a2a_task(served.url, SendMessageRequest(message=reply))
    assert done.id == paused.id and done.status.state == TaskState.TASK_STATE_COMPLETED
    assert count() == 1 and "counter is 1 (hello)" in get_message_text(done.status.message)


def test_an_edit_through_the_endpoint_is_validated_then_runs_with_the_new_arguments(served: Served) -> None:
    thread_id = uuid.uuid4().hex
    [interrupt] = paused_agui(served, thread_id)
    approve = f"{served.url}/api/sessions/{thread_id}/approve"
    bad = httpx.post(
        approve, json={"decisions": {interrupt["id"]: {"action": "edit", "args": {"nope": 1}}}}, timeout=60
    )
    assert bad.status_code == 400 and "note" in bad.json()["error"]["message"] and count() == 0
    assert httpx.get(f"{served.url}/api/sessions/{thread_id}").json()[-1]["status"] == "awaiting_approval"
    edit = {interrupt["id"]: {"action": "edit", "args": {"note": "edited"}}}
    body = httpx.post(approve, json={"decisions": edit}, timeout=60).json()
    assert count() == 1 and "counter is 1 (edited)" in body["answer"]


async def test_a2a_a_text_denial_on_the_context_completes_without_running_the_tool(served: Served) -> None:
    paused = await a2a_task(served.url, SendMessageRequest(message=new_text_message("bump it", role=Role.ROLE_USER)))
    assert paused.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    deny = new_text_message("no, too early", context_id=paused.context_id, task_id=paused.id, role=Role.ROLE_USER)
    done = await a2a_task(served.url, SendMessageRequest(message=deny))
    assert done.status.state == TaskState.TASK_STATE_COMPLETED and count() == 0
    assert "too early" in get_message_text(done.status.message)


async def test_the_hub_admits_decisions_like_a_message_and_pauses_with_an_approval_event(
    served: Served, tmp_path: Path
) -> None:
    hub = Hub(scripted_settings(tmp_path, served.server), ["team.yaml"])
    try:
        stream = await hub.turn("calc", "bump the counter")
        events = [event async for event in stream.events]
        approval, result = events[-2:]
        assert approval.kind == "approval" and result.kind == "result"
        assert approval.data["pending"] == result.data["pending"] and result.data["stop_reason"] == "awaiting_approval"
        [call] = hub.pending(stream.session_id)
        approve = {call.id: ApprovalDecision.approve(by="serve")}
        with pytest.raises(SessionNotFound):
            await hub.approve("calc", "no-such-session", approve)
        with pytest.raises(DecisionsRefused, match="call_x"):
            await hub.approve("calc", stream.session_id, {"call_x": ApprovalDecision.approve()})
        busy = await hub.turn("calc", "something else", session_id=stream.session_id)  # admitted, not yet run
        with pytest.raises(SessionBusy):
            await hub.approve("calc", stream.session_id, approve)
        await busy.events.aclose()  # never started: the paused turn still waits
        resumed = await hub.approve("calc", stream.session_id, approve)
        answer = [event async for event in resumed.events][-1]
        assert count() == 1 and "counter is 1 (hello)" in answer.text and hub.pending(stream.session_id) == []
    finally:
        hub.close()
