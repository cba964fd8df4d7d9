"""Traces: the run tree marks a failed tool call, no key leaks anywhere, spans reach OTLP receivers over gRPC and
http/protobuf named on the GenAI conventions and off the run's thread, and a dead receiver costs a run nothing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from huddle import RunResult, UsageLedger
from huddle.config.settings import load_settings
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.spec import TeamSpec
from huddle.testing import Fault, Reply, Rule, ScriptedServer
from huddle.tracing import export, read_run

KEY = "sk-planted-trace-key-0192837465"
TEAM = """
team: {name: calc, max_turns: 8}
agents:
  - {role: planner}
  - {role: tool_executor, tools: [calculator]}
  - {role: responder}
"""
PLAN = json.dumps(
    {
        "goal": "divide",
        "done": False,
        "steps": [
            {
                "id": 1,
                "assignee": "tool_executor",
                "instruction": "divide",
                "tool": "calculator",
                "args": json.dumps({"expression": "1/0"}),
                "depends_on": [],
            }
        ],
    }
)


def huddle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huddle", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENAI_API_KEY": KEY},
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ScriptedServer]:
    with ScriptedServer(
        rules=[
            Rule(agent="planner", reply=Reply(content=PLAN, usage=(120, 40))),
            Rule(agent="responder", times=1, fault=Fault(kind="server_error")),  # retried, then answers
            Rule(agent="responder", reply=Reply(content="Division by zero is undefined.", usage=(80, 9))),
        ]
    ) as running:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{running.base_url}', "
            "price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}\n"
        )
        (tmp_path / "team.yaml").write_text(TEAM)
        yield running


def test_trace_tree_marks_the_failed_tool_call_and_no_key_leaks(server: ScriptedServer, isolated_env: Path) -> None:
    run = huddle("run", "what is one divided by zero", "--team", "team.yaml", "--json")
    assert run.returncode == 0, run.stderr
    run_id = json.loads(run.stdout)["run_id"]

    spans = json.loads(huddle("trace", run_id, "--json").stdout)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_kind.setdefault(span["kind"], []).append(span)
    (root,) = by_kind["run"]
    (tool,) = by_kind["tool"]
    assert tool["status"] == "error" and "division by zero" in tool["error"].lower()
    agents = {s["attributes"]["gen_ai.agent.name"]: s for s in by_kind["agent"]}
    assert tool["parent"] == agents["tool_executor"]["id"] and agents["tool_executor"]["parent"] == root["id"]
    models = by_kind["model"]
    assert [(m["attributes"]["gen_ai.agent.name"], m["status"]) for m in models] == [
        ("planner", "ok"),
        ("responder", "error"),
        ("responder", "ok"),
    ]
    assert (
        models[0]["attributes"]["gen_ai.usage.input_tokens"] == 120 and models[0]["attributes"]["huddle.cost_usd"] > 0
    )
    assert models[0]["name"] == "chat scripted" and models[0]["attributes"]["gen_ai.operation.name"] == "chat"
    assert [d["attributes"]["huddle.policy"] for d in by_kind["decision"]] == ["rule", "plan", "plan"]
    assert root["attributes"]["huddle.calls"] == 3

    tree = huddle("trace", run_id).stdout
    assert "✗" in tree and "execute_tool calculator" in tree and "120+40 tokens" in tree
    assert run_id in huddle("runs").stdout

    for path in isolated_env.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in run.stdout + run.stderr


TEAM_SPEC = {
    "team": {"name": "calc"},
    "agents": [{"role": "planner"}, {"role": "tool_executor", "tools": ["calculator"]}, {"role": "responder"}],
}


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An in-process OTLP trace receiver (gRPC, or the body of an http/protobuf POST). Each export waits until
    `released` is set (or 10 s) and remembers whether it was: an export made on the run's own thread would hold the
    run until then."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.released = threading.Event()
        self.returned_released: list[bool] = []

    def Export(self, request: Any, context: Any = None) -> Any:
        self.returned_released.append(self.released.wait(10))
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for_run(self) -> None:
        deadline = time.monotonic() + 15
        while not any(s.name.startswith("run ") for s in self.spans) and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def fresh_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    """huddle reads the OTEL_* variables when tracing is first used in a process: start over for this test."""
    monkeypatch.setattr(export, "_current", None)


@pytest.fixture
def grpc_collector() -> Iterator[tuple[Collector, int]]:
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield collector, port
    collector.released.set()
    server.stop(0)


@pytest.fixture
def http_collector() -> Iterator[tuple[Collector, int]]:
    collector = Collector()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            reply = collector.Export(request).SerializeToString()
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield collector, server.server_address[1]
    collector.released.set()
    server.shutdown()


async def calc_run(collector: Collector, ledger: UsageLedger | None = None) -> RunResult:
    """One run of the calc team; the receiver is released only after it returned."""
    team = GroupChatTeam(TeamSpec.model_validate(TEAM_SPEC), load_settings(), ledger=ledger)
    try:
        result = await team.run("divide one by zero")
    finally:
        await team.close()
    collector.released.set()
    return result


async def traced_run(collector: Collector, ledger: UsageLedger | None = None) -> RunResult:
    """`calc_run`, then its spans awaited at the receiver."""
    result = await calc_run(collector, ledger)
    collector.wait_for_run()
    return result


def attributes_of(span: Any) -> dict[str, Any]:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


@pytest.mark.usefixtures("server", "fresh_tracing")
async def test_otlp_grpc_spans_follow_the_genai_conventions_match_the_ledger_and_leave_the_run_thread(
    grpc_collector: tuple[Collector, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    collector, port = grpc_collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    ledger = UsageLedger()
    result = await traced_run(collector, ledger)

    # Every export returned after the run had: none of them held it (a batch processor, off the run's thread).
    assert collector.returned_released and all(collector.returned_released)
    models = [attributes_of(s) for s in collector.spans if s.name == "chat scripted"]
    rows = ledger.records(run_id=result.run_id)
    assert sorted(m["gen_ai.usage.input_tokens"] for m in models) == sorted(r.prompt_tokens for r in rows)
    assert sorted(m["gen_ai.usage.output_tokens"] for m in models) == sorted(r.completion_tokens for r in rows)
    assert {m["gen_ai.operation.name"] for m in models} == {"chat"}
    assert {m["gen_ai.request.model"] for m in models} == {"scripted"}
    assert {m["gen_ai.agent.name"] for m in models} == {"planner", "responder"}
    assert sum(m["huddle.cost_usd"] for m in models) == pytest.approx(sum(r.cost_usd for r in rows))
    assert [s.status.code for s in collector.spans if s.name == "chat scripted"].count(2) == 1  # the 500, retried
    tool = next(s for s in collector.spans if s.name == "execute_tool calculator")
    assert attributes_of(tool)["gen_ai.tool.name"] == "calculator" and tool.status.code == 2  # 1/0 failed
    root = next(s for s in collector.spans if s.name == f"run {result.run_id}")
    assert "gen_ai.usage.input_tokens" not in attributes_of(root)  # tokens once, on the model spans
    planner_turn = next(s for s in collector.spans if s.name == "invoke_agent planner")
    assert planner_turn.parent_span_id == root.span_id and planner_turn.trace_id == root.trace_id


@pytest.mark.usefixtures("server", "fresh_tracing")
async def test_otlp_protocol_http_protobuf_is_honoured(
    http_collector: tuple[Collector, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    collector, port = http_collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    result = await traced_run(collector)
    assert f"run {result.run_id}" in [s.name for s in collector.spans]
    assert any(s.name == "chat scripted" for s in collector.spans)


@pytest.mark.usefixtures("server", "fresh_tracing")
async def test_otel_sdk_disabled_turns_tracing_off(
    grpc_collector: tuple[Collector, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    collector, port = grpc_collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    result = await calc_run(collector)
    time.sleep(0.5)
    assert collector.spans == [] and result.answer
    assert read_run(load_settings().runs_dir, result.run_id) == []  # the SDK is off: the run log too, as specified


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.usefixtures("server")
def test_a_dead_receiver_does_not_hold_the_run_and_warns_once() -> None:
    """The same `huddle run` without tracing and against a closed port (best of two each: start-up noise).

    Unbounded, the exporter's retries hold the exit for 10 s or more; the ≤ 1 s goal itself is measured by
    bench/tracing_overhead.py, not here, where a loaded CI machine adds seconds of its own.
    """

    def timed(extra: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "huddle", "run", "what is one divided by zero", "--team", "team.yaml"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **extra},
        )
        return time.perf_counter() - started, proc

    dead = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    plain = min(timed({})[0] for _ in range(2))
    runs = [timed(dead) for _ in range(2)]
    assert all(proc.returncode == 0 for _, proc in runs), runs[0][1].stderr
    assert min(seconds for seconds, _ in runs) < plain + 5.0, (plain, [s for s, _ in runs])
    for _, proc in runs:
        lines = [line for line in proc.stderr.splitlines() if "trace" in line.lower() or "otlp" in line.lower()]
        assert len(lines) <= 1, proc.stderr
