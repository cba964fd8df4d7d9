"""``huddle serve`` as an operator runs it: health, readiness and metrics, the JSON access log, a kill -9 mid-run and a
restart (the turn redone once), SIGTERM letting the run finish, the drain's deadline, and two workers on one data
directory that never run one session twice at once.

The servers under test are real: the app on uvicorn in a thread (`tests.serving`), or the ``huddle serve`` command as
a subprocess; the model is the scripted server; the client is httpx over HTTP.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from huddle.config.settings import Settings
from huddle.serve import app
from huddle.serve.ops import ACCESS_LOGGER, mark_draining
from huddle.storage.sessions import SessionStore, Turn
from huddle.testing import Reply, Rule, ScriptedServer
from tests.serving import scripted_settings, serving

_START_S = 60.0
_CHAT = "/v1/chat/completions"


def _chat(task: str, stream: bool = False) -> dict[str, object]:
    return {"model": "assistant", "messages": [{"role": "user", "content": task}], "stream": stream}


def _samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample ``/metrics`` shows, by name and labels."""
    text = httpx.get(f"{base}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _sample(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_health_readiness_and_metrics_after_a_run(tmp_path: Path) -> None:
    with ScriptedServer(fallback=Reply(content="Paris.")) as model:
        application = app(scripted_settings(tmp_path, model), ["assistant"])
        with serving(application) as base:
            assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
            ready = httpx.get(f"{base}/readyz")
            assert ready.status_code == 200 and ready.json()["teams"] == ["assistant"]
            before = _samples(base)
            assert _sample("huddle_runs_total", outcome="done", team="assistant") not in before

            answer = httpx.post(f"{base}{_CHAT}", json=_chat("Capital of France?"), timeout=60)
            assert answer.status_code == 200, answer.text

            after = _samples(base)
            team, responder = {"team": "assistant"}, {"team": "assistant", "agent": "responder", "model": "scripted"}
            assert after[_sample("huddle_runs_total", outcome="done", **team)] == 1
            assert after[_sample("huddle_run_seconds_count", **team)] == 1
            assert after[_sample("huddle_model_calls_total", **responder)] == 1
            assert after[_sample("huddle_model_call_seconds_count", **responder)] == 1
            [call] = model.chat_requests
            assert call.usage is not None and call.usage[0] > 0
            assert after[_sample("huddle_tokens_total", kind="prompt", **responder)] == call.usage[0]
            assert after[_sample("huddle_tokens_total", kind="completion", **responder)] == call.usage[1]
            assert after[_sample("huddle_turns_running")] == 0

            mark_draining(application.state.hub)
            draining = httpx.get(f"{base}/readyz")
            assert draining.status_code == 503 and draining.json()["status"] == "draining"
            assert httpx.get(f"{base}/healthz").status_code == 200  # draining is not dead


def test_not_ready_when_the_session_store_does_not_answer(tmp_path: Path) -> None:
    with ScriptedServer() as model:
        settings = scripted_settings(tmp_path, model)
        with serving(app(settings, ["assistant"])) as base:
            settings.sessions_path.parent.mkdir(parents=True, exist_ok=True)
            settings.sessions_path.unlink(missing_ok=True)
            settings.sessions_path.mkdir()  # a folder where the database should be
            ready = httpx.get(f"{base}/readyz")
            assert ready.status_code == 503
            assert ready.json() == {"status": "unavailable", "reason": "the session store does not answer"}
            assert str(tmp_path) not in ready.text


def test_access_log_is_one_json_line_per_request_without_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-live-0123456789abcdefSECRET"
    with (
        ScriptedServer(fallback=Reply(content="Hello there.", delay_s=1.0)) as model,
        serving(app(scripted_settings(tmp_path, model), ["assistant"])) as base,
        caplog.at_level(logging.INFO, logger=ACCESS_LOGGER),
    ):
        headers = {"Authorization": f"Bearer {secret}", "X-Api-Key": secret, "X-Huddle-Session": "S1"}
        assert httpx.get(f"{base}/healthz?key={secret}", headers=headers).status_code == 200
        started = time.monotonic()
        with httpx.stream("POST", f"{base}{_CHAT}", json=_chat("hi", stream=True), timeout=60) as stream:
            lines = stream.iter_lines()
            next(lines)
            first = time.monotonic() - started
            assert any(line == "data: [DONE]" for line in lines)
        total = time.monotonic() - started
        # The line is written once the response has ended, on the server's side of it.
        _wait(lambda: len([r for r in caplog.records if r.name == ACCESS_LOGGER]) == 2, "the access log lines")
    records = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(records) == 2
    probe, chat = (json.loads(r.getMessage()) for r in records)
    assert probe == {"method": "GET", "path": "/healthz", "status": 200, "duration_ms": probe["duration_ms"],
                     "session_id": "S1"}  # fmt: skip
    assert chat["method"] == "POST" and chat["path"] == _CHAT and chat["status"] == 200
    assert len(chat["session_id"]) == 32  # the new session the answer named
    assert chat["duration_ms"] >= 1000  # a stream's line covers the whole stream...
    assert first < total - 0.5  # ...which reached the client as it was written, not buffered
    assert secret not in caplog.text


@contextmanager
def huddle_serve(config: Path, *args: str, project: Path | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``huddle serve`` on `config` as a subprocess on a free port, ready; yields it and its URL; killed if still
    running. In `project` (its working directory, its modules importable) when given, as a deployed server is."""
    folder = config.parent
    log = (folder / "serve.log").open("a")
    process = subprocess.Popen(
        [sys.executable, "-m", "huddle", "--config", str(config), "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=project,
        env=None if project is None else os.environ | {"PYTHONPATH": str(project)},
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("huddle serve: http://127.0.0.1:"), banner + (folder / "serve.log").read_text()
        threading.Thread(target=process.stdout.read, daemon=True).start()  # the access log must not fill the pipe
        url = banner.split()[2]
        _wait(lambda: _ready(url), "the server to be ready")
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz").status_code == 200
    except httpx.HTTPError:
        return False


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = _START_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _turns(settings: Settings, session_id: str) -> list[Turn]:
    with SessionStore(settings.sessions_path) as store:
        return store.turns(session_id)


def _stream_in_background(url: str, session_id: str, task: str) -> tuple[threading.Thread, list[str]]:
    """A streamed chat on `session_id` in a thread; its SSE lines are collected (a dropped connection ends them)."""
    lines: list[str] = []

    def chat() -> None:
        try:
            with httpx.stream(
                "POST", f"{url}{_CHAT}", json=_chat(task, True), headers={"X-Huddle-Session": session_id}, timeout=60
            ) as response:
                lines.extend(response.iter_lines())
        except httpx.HTTPError:
            lines.append("dropped")

    thread = threading.Thread(target=chat, daemon=True)
    thread.start()
    return thread, lines


def _answer(lines: list[str]) -> str:
    """The answer text a stream's chunks carried."""
    text = ""
    for line in lines:
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
    return text


def _slow_then_fast(slow_s: float) -> ScriptedServer:
    """The responder answers its first request after `slow_s` (the one a test interrupts), the rest at once."""
    replies = [Reply(content="The slow answer.", delay_s=slow_s), Reply(content="The answer.")]
    return ScriptedServer([Rule(agent="responder", reply=replies)])


def test_kill_9_mid_run_then_restart_redoes_the_turn_once(tmp_path: Path) -> None:
    with _slow_then_fast(30.0) as model:
        settings = scripted_settings(tmp_path, model)
        with huddle_serve(tmp_path / "huddle.yaml") as (process, url):
            _stream_in_background(url, "K1", "What is the answer?")
            _wait(lambda: len(model.chat_requests) == 1, "the model call")
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        [interrupted] = _turns(settings, "K1")
        assert interrupted.status == "running"

        with huddle_serve(tmp_path / "huddle.yaml") as (_, url):
            _wait(lambda: _turns(settings, "K1")[0].status == "done", "the interrupted turn to be redone")
            [redone] = _turns(settings, "K1")
            assert (redone.turn, redone.task, redone.answer) == (1, "What is the answer?", "The answer.")
            assert len(model.chat_requests) == 2  # the call the kill cut short, and the redo: once

            again = httpx.post(
                f"{url}{_CHAT}", json=_chat("And again?"), headers={"X-Huddle-Session": "K1"}, timeout=60
            )
            assert again.status_code == 200, again.text
        turns = _turns(settings, "K1")
        assert [(t.turn, t.status) for t in turns] == [(1, "done"), (2, "done")]
        assert len(model.chat_requests) == 3


def test_sigterm_mid_run_lets_the_run_finish_before_exit(tmp_path: Path) -> None:
    with _slow_then_fast(2.0) as model:
        settings = scripted_settings(tmp_path, model)
        with huddle_serve(tmp_path / "huddle.yaml") as (process, url):
            thread, lines = _stream_in_background(url, "T1", "What is the answer?")
            _wait(lambda: len(model.chat_requests) == 1, "the model call")
            process.send_signal(signal.SIGTERM)
            thread.join(30)
            assert _answer(lines) == "The slow answer." and "data: [DONE]" in lines
            assert process.wait(30) == -signal.SIGTERM  # stopped by the signal, not by the drain's deadline
        assert [(t.status, t.answer) for t in _turns(settings, "T1")] == [("done", "The slow answer.")]


def test_drain_deadline_leaves_the_turn_for_the_next_start(tmp_path: Path) -> None:
    with _slow_then_fast(30.0) as model:
        settings = scripted_settings(tmp_path, model)
        with huddle_serve(tmp_path / "huddle.yaml", "--drain-timeout", "1") as (process, url):
            _stream_in_background(url, "D1", "What is the answer?")
            _wait(lambda: len(model.chat_requests) == 1, "the model call")
            process.send_signal(signal.SIGTERM)
            assert process.wait(15) == 1  # the drain's deadline ended it
        assert "the next start redoes them" in (tmp_path / "serve.log").read_text()
        assert [t.status for t in _turns(settings, "D1")] == ["running"]  # not cancelled: redone at the next start
        with huddle_serve(tmp_path / "huddle.yaml"):
            _wait(lambda: _turns(settings, "D1")[0].status == "done", "the turn to be redone")


def test_two_workers_never_run_one_session_twice_at_once(tmp_path: Path) -> None:
    with _slow_then_fast(3.0) as model:
        settings = scripted_settings(tmp_path, model)
        with huddle_serve(tmp_path / "huddle.yaml", "--workers", "2") as (_, url):
            body, session = _chat("What is the answer?", True), {"X-Huddle-Session": "W1"}
            with httpx.stream("POST", f"{url}{_CHAT}", json=body, headers=session, timeout=60) as first:
                assert first.status_code == 200  # admitted: the session is leased to the worker running it
                statuses = [httpx.post(f"{url}{_CHAT}", json=body, headers=session, timeout=60).status_code
                            for _ in range(4)]  # fmt: skip
                assert _answer(list(first.iter_lines())) == "The slow answer."
            assert statuses == [409] * 4  # whichever worker took them

            with SessionStore(settings.sessions_path) as store:
                store.lease("W2")  # another process (this test) holds W2
                held = httpx.post(f"{url}{_CHAT}", json=_chat("hi"), headers={"X-Huddle-Session": "W2"}, timeout=60)
                assert held.status_code == 409, held.text
            free = httpx.post(f"{url}{_CHAT}", json=_chat("hi"), headers={"X-Huddle-Session": "W2"}, timeout=60)
            assert free.status_code == 200, free.text
        assert [t.status for t in _turns(settings, "W1")] == ["done"]


def test_a_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with ScriptedServer() as model, socket.socket() as taken:
        scripted_settings(tmp_path, model)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        command = [sys.executable, "-m", "huddle", "--config", str(tmp_path / "huddle.yaml"), "serve", "--port", port]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}; choose another --port" in result.stderr
    assert "Traceback" not in result.stderr
