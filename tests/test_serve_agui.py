"""``POST /agui/{team}`` and the page's JSON API over real HTTP: a served team, the scripted model, httpx reading SSE.

Every event on the wire is parsed back with ag_ui.core's own models (the discriminated ``Event`` union), so a field
name or value the protocol does not allow fails here, and the state is rebuilt from the snapshot and the JSON Patch
deltas the way a client would, so a patch that does not apply fails too.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from ag_ui.core import (
    BaseEvent,
    CustomEvent,
    Event,
    EventType,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StateDeltaEvent,
    StateSnapshotEvent,
    TextMessageContentEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from pydantic import TypeAdapter

from huddle.serve import app
from huddle.serve.agui import AguiRun, json_patch
from huddle.serve.events import TeamEvent
from huddle.serve.hub import TurnEvents, TurnStream
from huddle.serve.keys import KeyAccess, KeyStore
from huddle.testing import Fault, Reply, Rule, ScriptedServer
from huddle.usage.budget import Budget
from tests.plans import calculator_plan
from tests.serving import scripted_settings, serving

TEAM = """
team: {name: calc, max_turns: 12, plan: always}
agents:
  - {role: planner}
  - {role: tool_executor, tools: [calculator, clock]}
  - {role: responder}
"""
ANSWER = "17*23 is 391."
EVENTS: TypeAdapter[BaseEvent] = TypeAdapter(Event)


def run_input(task: str, thread_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """A RunAgentInput as an AG-UI client sends it (camelCase), with the whole conversation so far."""
    return {
        "threadId": thread_id or uuid.uuid4().hex,
        "runId": "client-run-1",
        "state": {},
        "messages": [{"id": "m1", "role": "user", "content": task}],
        "tools": [],
        "context": [],
        "forwardedProps": {},
        **extra,
    }


def post_run(url: str, body: dict[str, Any]) -> list[BaseEvent]:
    """Every event of one run, parsed by ag_ui.core's models; the stream must be SSE ``data:`` lines."""
    with httpx.stream("POST", f"{url}/agui/calc", json=body, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [
            EVENTS.validate_json(line[len("data: ") :]) for line in response.iter_lines() if line.startswith("data: ")
        ]


def apply_patch(document: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 add/replace/remove, strictly: a pointer that does not resolve is an error, as in any client."""
    for operation in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
        target = document
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            if operation["op"] == "add":
                target.insert(len(target) if last == "-" else int(last), operation["value"])
            elif operation["op"] == "replace":
                target[int(last)] = operation["value"]
            else:
                del target[int(last)]
        elif operation["op"] == "add":
            target[last] = operation["value"]
        elif operation["op"] == "replace":
            assert last in target, operation
            target[last] = operation["value"]
        else:
            del target[last]
    return document


def final_state(events: list[BaseEvent]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for event in events:
        if isinstance(event, StateSnapshotEvent):
            state = json.loads(json.dumps(event.snapshot))
        elif isinstance(event, StateDeltaEvent):
            state = apply_patch(state, [op.model_dump(by_alias=True) for op in event.delta])
    return state


def text_messages(events: list[BaseEvent]) -> list[tuple[str | None, str]]:
    """(author, text) of each text message, the text being its content deltas after its last reset."""
    messages: dict[str, list[str]] = {}
    authors: dict[str, str | None] = {}
    for event in events:
        if isinstance(event, TextMessageStartEvent):
            messages[event.message_id], authors[event.message_id] = [], event.name
        elif isinstance(event, TextMessageContentEvent):
            messages[event.message_id].append(event.delta)
        elif isinstance(event, CustomEvent) and event.name == "huddle.text_reset":
            messages[event.value["messageId"]] = []
    return [(authors[m], "".join(parts)) for m, parts in messages.items()]


@contextmanager
def serving_calc(folder: Path, rules: list[Rule], *, max_retries: int = 0) -> Iterator[tuple[str, ScriptedServer]]:
    """The calc team served over HTTP, its model the scripted server answering by `rules`."""
    (folder / "team.yaml").write_text(TEAM)
    with ScriptedServer(rules=rules) as server:
        settings = scripted_settings(folder, server)
        profile = settings.models["default"].model_copy(update={"max_retries": max_retries})
        settings = settings.model_copy(update={"models": {**settings.models, "default": profile}})
        with serving(app(settings, [folder / "team.yaml"])) as url:
            yield url, server


@dataclass
class Served:
    url: str
    server: ScriptedServer
    events: list[BaseEvent]
    thread_id: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The calc team served, and one AG-UI run of it (a plan, a calculator call, the answer)."""
    rules = [
        Rule(agent="planner", reply=Reply(content=calculator_plan())),
        Rule(agent="responder", reply=Reply(content=ANSWER)),
    ]
    with serving_calc(tmp_path_factory.mktemp("agui"), rules) as (url, server):
        thread_id = uuid.uuid4().hex
        yield Served(url, server, post_run(url, run_input("What is 17*23?", thread_id)), thread_id)


def test_a_run_starts_with_its_ids_and_ends_with_the_answer(served: Served) -> None:
    first, last = served.events[0], served.events[-1]
    assert isinstance(first, RunStartedEvent) and isinstance(last, RunFinishedEvent)
    assert first.thread_id == last.thread_id == served.thread_id
    assert first.run_id == last.run_id != "client-run-1" and first.metadata == {
        "client_run_id": "client-run-1",
        "team": "calc",
    }
    assert last.result == {
        "answer": ANSWER,
        "stop_reason": "'responder' answered",
        "run_id": first.run_id,
        "session_id": served.thread_id,
    }
    assert isinstance(served.events[1], StateSnapshotEvent)
    assert [e.type for e in served.events].count(EventType.RUN_FINISHED) == 1


def test_the_tool_call_is_streamed_with_its_arguments_and_result(served: Served) -> None:
    kinds = [e.type for e in served.events]
    start = kinds.index(EventType.TOOL_CALL_START)
    assert kinds[start : start + 4] == [
        EventType.TOOL_CALL_START,
        EventType.TOOL_CALL_ARGS,
        EventType.TOOL_CALL_END,
        EventType.TOOL_CALL_RESULT,
    ]
    call, args, _, result = served.events[start : start + 4]
    assert isinstance(call, ToolCallStartEvent) and call.tool_call_name == "calculator"
    assert isinstance(args, ToolCallArgsEvent) and json.loads(args.delta) == {"expression": "17*23"}
    assert isinstance(result, ToolCallResultEvent) and result.tool_call_id == call.tool_call_id == args.tool_call_id
    assert result.content == "Step 1: calculator(expression='17*23') -> 391"
    speaker = served.events[start - 1]
    assert isinstance(speaker, CustomEvent) and speaker.name == "huddle.speaker"
    assert speaker.value == {"name": "tool_executor", "policy": "plan", "reason": "step 1 is ready: multiply"}
    assert kinds.count(EventType.TOOL_CALL_START) == 1


def test_each_message_is_under_its_speaker_and_the_answer_is_streamed(served: Served) -> None:
    messages = text_messages(served.events)
    assert [author for author, _ in messages] == ["planner", "responder"]  # not the user's task, not the tool report
    assert messages[-1] == ("responder", ANSWER)
    answer_id = next(
        e.message_id for e in served.events if isinstance(e, TextMessageStartEvent) and e.name == "responder"
    )
    deltas = [e for e in served.events if isinstance(e, TextMessageContentEvent) and e.message_id == answer_id]
    assert len(deltas) > 1  # streamed as the model wrote it, not sent whole at the end
    for index, event in enumerate(served.events):
        if isinstance(event, TextMessageStartEvent):
            assert event.role == "assistant"
            before = served.events[index - 1]
            assert isinstance(before, CustomEvent) and before.name == "huddle.speaker"
            assert before.value["name"] == event.name
    ends = [e for e in served.events if e.type == EventType.TEXT_MESSAGE_END]
    assert len(ends) == len(messages)


def test_the_state_carries_the_plan_the_meter_and_the_decisions(served: Served) -> None:
    with_plan = [e for e in served.events if isinstance(e, StateSnapshotEvent) and e.snapshot["plan"]["steps"]]
    assert with_plan and with_plan[0].snapshot["plan"]["steps"][0]["tool"] == "calculator"
    assert any(isinstance(e, StateDeltaEvent) for e in served.events)
    state = final_state(served.events)
    assert [(s["id"], s["status"]) for s in state["plan"]["steps"]] == [(1, "done"), (2, "done")]
    assert state["speaker"] == "responder"
    assert [d["policy"] for d in state["decisions"]] == ["rule", "plan", "plan"]
    assert state["decisions"][0] == {
        "speaker": "planner",
        "policy": "rule",
        "reason": "new task: the planner drafts a plan",
    }
    usage = [r.usage for r in served.server.chat_requests if r.usage]
    assert state["meter"] == {
        "calls": 2,
        "prompt_tokens": sum(u[0] for u in usage),
        "completion_tokens": sum(u[1] for u in usage),
        "cost_usd": 0.0,
        "max_usd": None,
    }


def test_every_team_event_travels_as_a_huddle_event(served: Served) -> None:
    custom = [e.value for e in served.events if isinstance(e, CustomEvent) and e.name == "huddle.event"]
    kinds = [value["kind"] for value in custom]
    assert kinds[0] == "message" and custom[0]["text"] == "What is 17*23?"
    assert kinds[-1] == "result" and custom[-1]["data"]["answer"] == ANSWER
    assert {"speaker", "plan", "tool_calls", "text_delta", "usage"} <= set(kinds)


def test_the_api_lists_the_session_and_its_turn(served: Served) -> None:
    run_id = served.events[0].run_id  # type: ignore[attr-defined]
    teams = httpx.get(f"{served.url}/api/teams").json()
    assert [t["name"] for t in teams] == ["calc"]
    assert [m["name"] for m in teams[0]["members"]] == ["planner", "tool_executor", "responder"]
    sessions = httpx.get(f"{served.url}/api/sessions").json()
    assert [(s["id"], s["team"], s["turns"]) for s in sessions] == [(served.thread_id, "calc", 1)]
    turns = httpx.get(f"{served.url}/api/sessions/{served.thread_id}").json()
    assert [(t["turn"], t["run_id"], t["task"], t["status"], t["answer"]) for t in turns] == [
        (1, run_id, "What is 17*23?", "done", ANSWER)
    ]
    assert set(turns[0]) == {"turn", "run_id", "task", "status", "answer", "messages", "decisions", "plan", "error"}
    missing = httpx.get(f"{served.url}/api/sessions/{uuid.uuid4().hex}")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"


def test_the_trace_is_a_tree_with_the_model_calls_and_their_tokens(served: Served) -> None:
    run_id = served.events[0].run_id  # type: ignore[attr-defined]
    tree = httpx.get(f"{served.url}/api/runs/{run_id}/trace").json()
    assert tree["kind"] == "run" and tree["name"] == f"run {run_id}" and tree["duration_s"] > 0

    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node["children"]:
            yield from nodes(child)

    models = [n for n in nodes(tree) if n["kind"] == "model"]
    usage = [r.usage for r in served.server.chat_requests if r.usage]
    assert [(n["attributes"]["prompt_tokens"], n["attributes"]["completion_tokens"]) for n in models] == usage
    assert all(
        n["attributes"]["tokens"] == sum(u) and "cost_usd" in n["attributes"]
        for n, u in zip(models, usage, strict=True)
    )
    agents = {n["attributes"].get("gen_ai.agent.name") for n in tree["children"] if n["kind"] == "agent"}
    assert agents == {"planner", "tool_executor", "responder"}  # model calls sit under their agent's turn
    assert tree["attributes"]["tokens"] == sum(sum(u) for u in usage)
    for bad in (uuid.uuid4().hex[:12], "not.a.run"):
        assert httpx.get(f"{served.url}/api/runs/{bad}/trace").status_code == 404


def test_a_run_that_fails_ends_with_run_error(tmp_path: Path) -> None:
    with serving_calc(tmp_path, [Rule(fault=Fault(kind="server_error"))]) as (url, _):
        events = post_run(url, run_input("What is 17*23?"))
    assert isinstance(events[0], RunStartedEvent)
    last = events[-1]
    assert isinstance(last, RunErrorEvent) and last.code == "run_failed" and last.message.startswith("error")
    assert "Traceback" not in last.message
    assert not any(isinstance(e, RunFinishedEvent) for e in events)


def test_a_retried_answer_that_changes_is_reset_then_sent_again(tmp_path: Path) -> None:
    rules = [
        Rule(agent="planner", reply=Reply(content=calculator_plan())),
        Rule(
            agent="responder", times=1, reply=Reply(content="The first try says this"), fault=Fault(kind="cut_stream")
        ),
        Rule(agent="responder", reply=Reply(content=ANSWER)),
    ]
    with serving_calc(tmp_path, rules, max_retries=2) as (url, _):
        events = post_run(url, run_input("What is 17*23?"))
    resets = [e for e in events if isinstance(e, CustomEvent) and e.name == "huddle.text_reset"]
    assert len(resets) == 1
    assert text_messages(events)[-1] == ("responder", ANSWER)
    after = events[events.index(resets[0]) + 1 :]
    again = [e for e in after if isinstance(e, TextMessageContentEvent)]
    assert len(again) > 1 and again[0].message_id == resets[0].value["messageId"]  # streamed again, not resent whole
    assert isinstance(events[-1], RunFinishedEvent)


def test_a_turn_that_cannot_start_is_an_http_error_before_any_stream(tmp_path: Path) -> None:
    rules = [
        Rule(agent="planner", reply=Reply(content=calculator_plan())),
        Rule(agent="responder", reply=Reply(content=ANSWER, delay_s=3)),
    ]
    with serving_calc(tmp_path, rules) as (url, _):
        thread_id = uuid.uuid4().hex
        admitted, first = threading.Event(), list[str]()

        def slow_turn() -> None:
            with httpx.stream("POST", f"{url}/agui/calc", json=run_input("slow", thread_id), timeout=30) as reply:
                for line in reply.iter_lines():
                    admitted.set()  # RUN_STARTED came: the turn holds its session
                    first.append(line)

        running = threading.Thread(target=slow_turn)
        running.start()
        assert admitted.wait(20)
        busy = httpx.post(f"{url}/agui/calc", json=run_input("again", thread_id))
        running.join(30)
        unknown = httpx.post(f"{url}/agui/nope", json=run_input("hi"))
        no_thread = httpx.post(f"{url}/agui/calc", json={"runId": "r", "messages": []})
        no_task = httpx.post(f"{url}/agui/calc", json=run_input("hi", messages=[]))
        not_json = httpx.post(f"{url}/agui/calc", content=b"{", headers={"content-type": "application/json"})
    assert busy.status_code == 409 and busy.json()["error"]["type"] == "busy"
    assert '"RUN_FINISHED"' in [line for line in first if line.startswith("data: ")][-1]  # the first turn went on
    assert unknown.status_code == 404 and "'nope'" in unknown.json()["error"]["message"]
    assert no_thread.status_code == 400 and "threadId" in no_thread.json()["error"]["message"]
    assert no_task.status_code == 400 and "no user message" in no_task.json()["error"]["message"]
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]


def test_state_deltas_are_small_patches_that_rebuild_the_state() -> None:
    old = {"plan": {"steps": [{"id": 1, "status": "pending"}]}, "decisions": [], "a/b~c": 1, "gone": True}
    new = {"plan": {"steps": [{"id": 1, "status": "done"}]}, "decisions": [{"speaker": "x"}], "a/b~c": 2}
    patch = json_patch(old, new)
    assert patch == [
        {"op": "remove", "path": "/gone"},
        {"op": "replace", "path": "/plan/steps/0/status", "value": "done"},
        {"op": "add", "path": "/decisions/-", "value": {"speaker": "x"}},
        {"op": "replace", "path": "/a~1b~0c", "value": 2},
    ]
    assert apply_patch(json.loads(json.dumps(old)), patch) == new
    assert json_patch(new, new) == []
    shorter = {**new, "decisions": []}
    assert apply_patch(json.loads(json.dumps(new)), json_patch(new, shorter)) == shorter


def test_a_client_that_goes_away_ends_its_turn_as_cancelled(tmp_path: Path) -> None:
    rules = [
        Rule(agent="planner", reply=Reply(content=calculator_plan())),
        Rule(agent="responder", reply=Reply(content=ANSWER, delay_s=5)),
    ]
    with serving_calc(tmp_path, rules) as (url, _):
        thread_id = uuid.uuid4().hex
        with httpx.stream("POST", f"{url}/agui/calc", json=run_input("What is 17*23?", thread_id)) as reply:
            for line in reply.iter_lines():
                if '"TOOL_CALL_RESULT"' in line:
                    break  # gone while the responder is still writing
        for _ in range(100):
            turns = httpx.get(f"{url}/api/sessions/{thread_id}").json()
            if turns[0]["status"] != "running":
                break
            threading.Event().wait(0.05)
        with httpx.stream("POST", f"{url}/agui/calc", json=run_input("again", thread_id)) as again:
            status = again.status_code  # admitted: the session is free for the next message
    assert turns[0]["status"] == "cancelled"
    assert status == 200


def test_sessions_and_traces_are_their_keys_only(tmp_path: Path) -> None:
    rules = [
        Rule(agent="planner", reply=Reply(content=calculator_plan())),
        Rule(agent="responder", reply=Reply(content=ANSWER)),
    ]
    (tmp_path / "team.yaml").write_text(TEAM)
    with ScriptedServer(rules=rules) as server:
        settings = scripted_settings(tmp_path, server)
        with KeyStore.of(settings) as keys:
            alice = {"Authorization": f"Bearer {keys.add('alice')}"}
            bob = {"Authorization": f"Bearer {keys.add('bob')}"}
        with serving(app(settings, [tmp_path / "team.yaml"], access=KeyAccess.of(settings))) as url:
            thread_id = uuid.uuid4().hex
            with httpx.stream("POST", f"{url}/agui/calc", json=run_input("hi", thread_id), headers=alice) as reply:
                events = [EVENTS.validate_json(line[6:]) for line in reply.iter_lines() if line.startswith("data: ")]
            run_id = events[0].run_id  # type: ignore[attr-defined]
            seen = {
                who: (
                    [s["id"] for s in httpx.get(f"{url}/api/sessions", headers=headers).json()],
                    httpx.get(f"{url}/api/sessions/{thread_id}", headers=headers).status_code,
                    httpx.get(f"{url}/api/runs/{run_id}/trace", headers=headers).status_code,
                )
                for who, headers in (("alice", alice), ("bob", bob))
            }
            taken = httpx.post(f"{url}/agui/calc", json=run_input("mine now", thread_id), headers=bob)
    assert isinstance(events[-1], RunFinishedEvent)
    assert seen == {"alice": ([thread_id], 200, 200), "bob": ([], 404, 404)}
    assert taken.status_code == 404 and taken.json()["error"]["type"] == "not_found"


async def no_events() -> AsyncGenerator[TeamEvent, None]:
    return
    yield


def test_a_tool_report_without_calls_is_the_executors_message() -> None:
    run = AguiRun(TurnStream("s", "r", "calc", TurnEvents(no_events(), lambda: None), Budget()), {}, client_run_id="c")
    events = run.translate(TeamEvent("tool_calls", "tool_executor", "Request: nothing to run", {"calls": []}))
    assert text_messages(events) == [("tool_executor", "Request: nothing to run")]
    assert not any(isinstance(e, ToolCallStartEvent) for e in events)
