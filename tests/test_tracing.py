"""Traces: the run tree marks a failed tool call, spans reach an OTLP collector, and no key leaks anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from huddle.config.settings import load_settings
from huddle.teams.group_chat import GroupChatTeam
from huddle.teams.spec import TeamSpec
from huddle.testing import Fault, Reply, Rule, ScriptedServer

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
    agents = {s["attributes"]["agent"]: s for s in by_kind["agent"]}
    assert tool["parent"] == agents["tool_executor"]["id"] and agents["tool_executor"]["parent"] == root["id"]
    models = by_kind["model"]
    assert [(m["attributes"]["agent"], m["status"]) for m in models] == [
        ("planner", "ok"),
        ("responder", "error"),
        ("responder", "ok"),
    ]
    assert models[0]["attributes"]["prompt_tokens"] == 120 and models[0]["attributes"]["cost_usd"] > 0
    assert [d["attributes"]["policy"] for d in by_kind["decision"]] == ["rule", "plan", "plan"]
    assert root["attributes"]["calls"] == 3

    tree = huddle("trace", run_id).stdout
    assert "✗" in tree and "tool calculator" in tree and "120+40 tokens" in tree
    assert run_id in huddle("runs").stdout

    for path in isolated_env.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in run.stdout + run.stderr


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal in-process OTLP/gRPC trace collector."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    def Export(self, request: Any, context: Any) -> Any:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_spans_reach_an_otlp_collector_with_tokens_and_cost(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = Collector()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        team = GroupChatTeam(
            TeamSpec.model_validate(
                {
                    "team": {"name": "calc"},
                    "agents": [
                        {"role": "planner"},
                        {"role": "tool_executor", "tools": ["calculator"]},
                        {"role": "responder"},
                    ],
                }
            ),
            load_settings(),
        )
        result = await team.run("divide one by zero")
        await team.close()
        deadline = time.monotonic() + 10
        while not any(s.name.startswith("run ") for s in collector.spans) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        grpc_server.stop(0)
    names = [s.name for s in collector.spans]
    assert f"run {result.run_id}" in names and "tool calculator" in names
    model = next(s for s in collector.spans if s.name == "model scripted" and s.status.code != 2)
    attributes = {a.key: a.value for a in model.attributes}
    assert attributes["prompt_tokens"].int_value == 120 and attributes["cost_usd"].double_value > 0
    root = next(s for s in collector.spans if s.name.startswith("run "))
    planner_turn = next(s for s in collector.spans if s.name == "agent planner")
    assert planner_turn.parent_span_id == root.span_id and planner_turn.trace_id == root.trace_id
