"""What OTLP export costs a ``huddle run``: no export, a live receiver, and a dead one (a closed port), per protocol.

Run: ``python bench/tracing_overhead.py [--runs 5]``. Each run is its own ``huddle run`` process against the scripted
server (a planner, a calculator call, an answer), so start-up and the exit flush are counted as a user feels them.
Prints the median wall time of each setting, its difference to no export, and how many stderr lines mention traces
(the target: a dead receiver adds at most 1 s and at most one warning line).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from huddle.testing import Reply, Rule, ScriptedServer

TEAM = """
team: {name: calc, max_turns: 8, plan: always}
agents:
  - {role: planner}
  - {role: tool_executor, tools: [calculator]}
  - {role: responder}
"""
PLAN = {
    "goal": "multiply",
    "done": False,
    "steps": [
        {
            "id": 1,
            "assignee": "tool_executor",
            "instruction": "multiply",
            "tool": "calculator",
            "args": json.dumps({"expression": "17*23"}),
            "depends_on": [],
        }
    ],
}


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0

    def Export(self, request: Any, context: Any) -> Any:
        self.spans += sum(len(scope.spans) for r in request.resource_spans for scope in r.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed(folder: Path, env: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "huddle", "run", "What is 17*23?", "--team", "team.yaml"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    noise = [line for line in done.stderr.splitlines() if "trace" in line.lower() or "otlp" in line.lower()]
    return time.perf_counter() - started, len(noise)


def main(runs: int) -> None:
    receiver = Receiver()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, grpc_server)
    live_port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    rules = [Rule(agent="planner", reply=Reply(content=json.dumps(PLAN))), Rule(reply=Reply(content="391."))]
    with ScriptedServer(rules=rules) as server, tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "huddle.yaml").write_text(f"models:\n  default: {{model: scripted, base_url: '{server.base_url}'}}\n")
        (folder / "team.yaml").write_text(TEAM)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HUDDLE_"))}
        base |= {"HUDDLE_HOME": str(folder / "data"), "NO_COLOR": "1"}
        dead = f"http://127.0.0.1:{closed_port()}"
        settings = {
            "no export": {},
            "live receiver (grpc)": {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{live_port}"},
            "dead receiver (grpc)": {"OTEL_EXPORTER_OTLP_ENDPOINT": dead},
            "dead receiver (http/protobuf)": {
                "OTEL_EXPORTER_OTLP_ENDPOINT": dead,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
        }
        results: dict[str, list[tuple[float, int]]] = {label: [] for label in settings}
        timed(folder, base)  # warm the file cache and the native probe cache
        for _ in range(runs):  # interleaved, so drift in the machine's load hits every setting alike
            for label, extra in settings.items():
                results[label].append(timed(folder, base | extra))
    grpc_server.stop(0)
    plain = statistics.median(s for s, _ in results["no export"])
    print(f"{'':32} {'median s':>9} {'vs none':>8} {'trace lines (max)':>18}")
    for label, rows in results.items():
        median = statistics.median(s for s, _ in rows)
        print(f"{label:32} {median:9.2f} {median - plain:+8.2f} {max(n for _, n in rows):18}")
    print(f"spans the live receiver got: {receiver.spans} ({receiver.spans / runs:.0f} a run)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="runs per setting")
    main(parser.parse_args().runs)
