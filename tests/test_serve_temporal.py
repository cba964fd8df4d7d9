"""``huddle serve --engine temporal``: every turn of the server runs on the Temporal engine, on the real things: a
Temporal dev server, a ``huddle worker`` process, a scripted model server, the ``huddle serve`` command as a
subprocess, and the real openai client and httpx over HTTP.

The server's own settings point at a model nobody answers at, so these fail if the server runs a turn in its own
process rather than on the worker; and if a session's second turn does not see its first, if an approval does not
round-trip through the workflow, if a key's spent session is not refused, or if a server starts with no Temporal
service to send its turns to.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from huddle.testing import ScriptedServer
from huddle.testing.replies import Reply
from huddle.testing.temporal import DevServer, Workers, dev_server, free_port
from tests.test_serve_ops import huddle_serve
from tests.test_temporal_engine import _approval_project, _config

_ON_TEMPORAL = ("--engine", "temporal")
_ANSWER = "The code word is PELICAN-7."


@pytest.fixture
def temporal(tmp_path: Path) -> Iterator[DevServer]:
    with dev_server(tmp_path) as server:
        yield server


def _serve_config(folder: Path, temporal: DevServer) -> Path:
    """The server's own huddle.yaml: the workers' data directory and Temporal task queue (`_config`), but a model
    nobody answers at, so only a turn run on a worker can reach the scripted model."""
    config = folder / "serve.yaml"
    config.write_text(
        f"models:\n  default: {{model: scripted, base_url: 'http://127.0.0.1:{free_port()}/v1', max_retries: 0}}\n"
        f"data_dir: {folder / 'data'}\ntemporal: {{address: '{temporal.address}', task_queue: q-{folder.name}}}\n"
    )
    return config


def _huddle(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huddle", "--config", str(config), *args], capture_output=True, text=True, timeout=120
    )


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=120, max_retries=0)


def test_chat_completions_run_on_the_workers_and_a_session_goes_on_from_its_first_turn(
    tmp_path: Path, temporal: DevServer
) -> None:
    with ScriptedServer(fallback=Reply(content=_ANSWER)) as model:
        config = _config(tmp_path, model, temporal)
        workers = Workers(config, tmp_path)
        workers.start()
        try:
            with huddle_serve(_serve_config(tmp_path, temporal), *_ON_TEMPORAL, project=tmp_path) as (_, url):
                client = _client(url)
                first = client.chat.completions.with_raw_response.create(
                    model="assistant", messages=[{"role": "user", "content": "Remember the code word, please."}]
                )
                session_id = first.headers["x-huddle-session"]
                completion = first.parse()
                assert completion.choices[0].message.content == _ANSWER
                extension = (completion.model_extra or {})["huddle"]
                kinds = [event["kind"] for event in extension["events"]]
                assert "message" in kinds and "usage" in kinds  # the run's messages and meter, from the workflow
                assert extension["run_id"] == first.headers["x-huddle-run"]
                asked = len(model.requests)
                assert asked >= 1

                second = client.chat.completions.create(
                    model="assistant",
                    messages=[{"role": "user", "content": "What was the code word?"}],
                    extra_headers={"X-Huddle-Session": session_id},
                )
                assert second.choices[0].message.content == _ANSWER
                later = model.requests[asked:]
                assert later and any("PELICAN-7" in json.dumps(r.messages) for r in later)  # the first turn, seen

                streamed = client.chat.completions.create(
                    model="assistant",
                    messages=[{"role": "user", "content": "Once more?"}],
                    extra_headers={"X-Huddle-Session": session_id},
                    stream=True,
                )
                text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
                assert text == _ANSWER
        finally:
            workers.close()
        worker_log = (tmp_path / "worker0.log").read_text()
    listed = _huddle(config, "sessions", "list")  # the shared session store, from another process
    assert listed.returncode == 0, listed.stderr
    assert f"{session_id}  team assistant  3 turns" in listed.stdout, listed.stdout + worker_log


def test_an_approval_pauses_the_workflows_turn_and_the_decision_posted_over_http_answers(
    tmp_path: Path, temporal: DevServer
) -> None:
    team, rules = _approval_project(tmp_path)
    counter = tmp_path / "count.txt"
    with ScriptedServer(rules) as model:
        config = _config(tmp_path, model, temporal)
        workers = Workers(config, tmp_path)
        workers.start(str(team))
        try:
            with huddle_serve(
                _serve_config(tmp_path, temporal), *_ON_TEMPORAL, "--team", str(team), project=tmp_path
            ) as (_, url):
                paused = _client(url).chat.completions.with_raw_response.create(
                    model="gate", messages=[{"role": "user", "content": "bump the counter"}]
                )
                session_id = paused.headers["x-huddle-session"]
                completion = paused.parse()
                text = completion.choices[0].message.content or ""
                assert text.startswith("Waiting for your approval: bump("), text
                [call] = (completion.model_extra or {})["huddle"]["pending"]
                assert not counter.exists()  # nothing ran: the workflow waits for the decision

                approve = f"{url}/api/sessions/{session_id}/approve"
                page = httpx.get(f"{url}/api/sessions/{session_id}").json()  # the page's view: the pending call
                assert page[-1]["status"] == "awaiting_approval" and page[-1]["pending"][0]["id"] == call["id"]
                wrong = httpx.post(approve, json={"decisions": {"call_nope": {"action": "approve"}}}, timeout=60)
                assert wrong.status_code == 422, wrong.text  # refused before anything reaches the workflow
                assert not counter.exists()

                decided = httpx.post(approve, json={"decisions": {call["id"]: {"action": "approve"}}}, timeout=120)
                assert decided.status_code == 200, decided.text
                body = decided.json()
                assert "counter is 1 (hello)" in body["answer"] and body["pending"] == []
                assert counter.read_text() == "1"  # the approved call ran once, on the worker

                again = httpx.post(approve, json={"decisions": {call["id"]: {"action": "approve"}}}, timeout=60)
                assert again.status_code == 422, again.text  # nothing waits any more
                turns = httpx.get(f"{url}/api/sessions/{session_id}").json()
                assert [t["status"] for t in turns] == ["done"] and "counter is 1" in turns[0]["answer"]

                # A paused turn that a new message overtakes is cancelled; only the new turn's call waits.
                chat = _client(url).chat.completions
                headers = {"X-Huddle-Session": session_id}
                for task in ("bump it again", "bump it once more"):
                    chat.create(model="gate", messages=[{"role": "user", "content": task}], extra_headers=headers)
                turns = httpx.get(f"{url}/api/sessions/{session_id}").json()
                assert [t["status"] for t in turns] == ["done", "cancelled", "awaiting_approval"]
                assert turns[-1]["task"] == "bump it once more" and len(turns[-1]["pending"]) == 1
        finally:
            workers.close()
    assert counter.read_text() == "1"


def test_a_server_on_the_temporal_engine_refuses_to_start_without_the_temporal_service(tmp_path: Path) -> None:
    config = tmp_path / "huddle.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\ntemporal: {{address: '127.0.0.1:{free_port()}'}}\n")
    started = _huddle(config, "serve", "--engine", "temporal", "--port", "0")
    assert started.returncode == 1, started.stdout + started.stderr
    assert "huddle serve: http" not in started.stdout  # never listened
    [line] = started.stderr.strip().splitlines()
    assert line.startswith("error: no Temporal service at temporal.address '127.0.0.1:"), line


def test_a_keys_spent_session_budget_refuses_its_next_turn_from_the_workers_ledger_rows(
    tmp_path: Path, temporal: DevServer
) -> None:
    price = json.dumps({"input_per_mtok": 2.0, "output_per_mtok": 8.0})  # with usage (200, 50) a call costs $0.0008
    with ScriptedServer(fallback=Reply(content=_ANSWER, usage=(200, 50))) as model:
        config = tmp_path / "huddle.yaml"  # the workers': the priced model, the data and the task queue
        where = f"{{address: '{temporal.address}', task_queue: q-{tmp_path.name}}}"
        config.write_text(
            f"models:\n  default: {{model: scripted, base_url: '{model.base_url}', max_retries: 0, price: {price}}}\n"
            f"data_dir: {tmp_path / 'data'}\ntemporal: {where}\n"
        )
        added = _huddle(config, "serve", "keys", "add", "alice", "--usd-per-session", "0.0005")
        assert added.returncode == 0, added.stderr
        key = added.stdout.strip()
        workers = Workers(config, tmp_path)
        workers.start()
        try:
            with huddle_serve(_serve_config(tmp_path, temporal), *_ON_TEMPORAL, project=tmp_path) as (_, url):
                assert httpx.get(f"{url}/v1/models").status_code == 401  # a key exists: the server wants one
                client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, timeout=120, max_retries=0)
                first = client.chat.completions.with_raw_response.create(
                    model="assistant", messages=[{"role": "user", "content": "Hello"}]
                )
                session_id = first.headers["x-huddle-session"]
                assert first.parse().choices[0].message.content == _ANSWER
                asked = len(model.requests)
                assert asked >= 1  # $0.0008 a call: the session's $0.0005 are spent, by the worker's calls
                with pytest.raises(openai.RateLimitError, match="for this session"):
                    client.chat.completions.create(
                        model="assistant",
                        messages=[{"role": "user", "content": "And again"}],
                        extra_headers={"X-Huddle-Session": session_id},
                    )
                assert len(model.requests) == asked  # refused before the workflow was asked
        finally:
            workers.close()
