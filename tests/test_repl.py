"""``huddle chat`` as a person uses it: on a pseudo-terminal (line editing, history, commands, Ctrl-C, keys typed
during a run) and with piped input (any bytes, failed turns, the exit code at the end of input)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from huddle.testing import Fault, Reply, Rule, ScriptedServer

DESK = """
team: {name: desk, max_turns: 4}
agents:
  - {role: tool_executor, tools: [calculator]}
  - {role: responder}
"""
PICK_RESPONDER = Rule(agent="manager", reply=Reply(content="responder"))
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{running.base_url}', max_retries: 0}}\n"
        )
        (tmp_path / "team.yaml").write_text(DESK)
        yield running


def answered(server: ScriptedServer) -> list[str]:
    """The last user-side text of each request the responder made."""
    return [r.last_text for r in server.chat_requests if r.agent == "responder"]


def wait_for(condition: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def sessions(session: str) -> list[tuple[str, str | None]]:
    proc = subprocess.run(
        [sys.executable, "-m", "huddle", "sessions", "show", session, "--json"], capture_output=True, text=True
    )
    return [(t["status"], t["task"]) for t in json.loads(proc.stdout)]


class Terminal:
    """`huddle chat` on a pseudo-terminal of its own, driven like a person at a keyboard."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1", "COLUMNS": "120"}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: its controlling terminal is the pty
            os.execvpe(sys.executable, [sys.executable, "-m", "huddle", "chat", *args], env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.screen = ""  # everything shown, escape sequences removed
        self._seen = 0
        self._exited = False

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def expect(self, text: str, timeout: float = 60) -> str:
        """Wait until `text` is shown after what the last `expect` matched; return what came in between."""
        deadline = time.monotonic() + timeout
        while (found := self.screen.find(text, self._seen)) < 0:
            assert time.monotonic() < deadline, f"{text!r} never shown; screen:\n{self.screen}"
            self._read(deadline - time.monotonic())
        between, self._seen = self.screen[self._seen : found], found + len(text)
        return between

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0))
        if ready:
            try:
                self.screen += _ESCAPES.sub("", os.read(self.fd, 65536).decode(errors="replace"))
            except OSError:  # the child exited and the pty closed
                time.sleep(0.05)

    def exit_code(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._exited = True
                return os.waitstatus_to_exitcode(status)
            assert time.monotonic() < deadline, f"chat still running; screen:\n{self.screen}"
            self._read(0.05)

    def close(self) -> None:
        if not self._exited:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for each in opened:
        each.close()


def test_the_prompt_has_commands_history_and_ctrl_c_cancels_only_the_turn(
    server: ScriptedServer, terminal: list[Terminal], isolated_env: Path
) -> None:
    server.add_rule(PICK_RESPONDER)
    server.add_rule(Rule(agent="responder", last="slow", times=1, reply=Reply(content="never sent", delay_s=30)))
    server.add_rule(Rule(agent="responder", last="17", reply=Reply(content="It is 391.", delay_s=1.0)))
    chat = Terminal("--team", "team.yaml", "--session", "T1")
    terminal.append(chat)
    chat.expect("you>")
    chat.type("/help\r")
    listed = chat.expect("Ctrl-C cancels the turn at work")
    assert all(command in listed for command in ("/help", "/cost", "/plan", "/session", "/exit"))
    chat.type("/session\r")
    chat.expect("session T1; to continue it later: huddle chat --team team.yaml --session T1")
    chat.type("/bogus\r")
    chat.expect("unknown command /bogus; /help lists the commands")

    chat.type("a slow question\r")
    wait_for(lambda: answered(server))
    chat.type("\x03")  # Ctrl-C while the responder thinks
    pressed = time.monotonic()
    chat.expect("cancelled", timeout=5)
    assert time.monotonic() - pressed < 1.0
    chat.expect("you>")  # the chat is still open
    chat.type("What is 17*23?\r")
    wait_for(lambda: len(answered(server)) == 2)
    chat.type("typed while it works\r")  # must not become the next message
    chat.expect("It is 391.")
    chat.expect("you>")
    chat.type("\x04")  # Ctrl-D leaves
    assert chat.exit_code() == 0
    assert answered(server) == ["a slow question", "What is 17*23?"]
    assert sessions("T1") == [("cancelled", "a slow question"), ("done", "What is 17*23?")]
    history = (isolated_env / "chat_history").read_text()
    assert "What is 17*23?" in history and "typed while it works" not in history

    again = Terminal("--team", "team.yaml", "--session", "T1")
    terminal.append(again)
    again.expect("you>")
    again.type("\x1b[A\r")  # arrow up: the last line of the previous chat, from the history file
    wait_for(lambda: len(answered(server)) == 3)
    resumed = [r.messages for r in server.chat_requests if r.agent == "responder"][-1]
    # the saved exchange comes back as the messages it was, then the question
    assert [(m["role"], m["content"]) for m in resumed[1:]] == [
        ("user", "What is 17*23?"),
        ("assistant", "It is 391."),
        ("user", "What is 17*23?"),
    ]
    again.expect("It is 391.")
    again.expect("you>")
    again.type("/quit\r")
    assert again.exit_code() == 0


def huddle_chat(stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "huddle", "chat", "--team", "team.yaml", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
    )


def test_piped_bytes_that_are_not_utf8_are_replaced_not_a_traceback(server: ScriptedServer) -> None:
    server.add_rule(PICK_RESPONDER)
    server.add_rule(Rule(agent="responder", reply=Reply(content="Got it.")))
    proc = huddle_chat(b"\xff\xfe\n/exit\n")
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr and b"Got it." in proc.stdout
    assert answered(server) == ["\ufffd\ufffd"]


def test_piped_chat_reports_each_failed_turn_goes_on_and_exits_1(server: ScriptedServer) -> None:
    server.add_rule(PICK_RESPONDER)
    server.add_rule(Rule(agent="responder", last="first", fault=Fault(kind="server_error")))
    server.add_rule(Rule(agent="responder", reply=Reply(content="Second answer.")))
    proc = huddle_chat(b"first message\nsecond message\n", "--session", "P1")
    assert proc.returncode == 1
    errors = proc.stderr.decode().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and "500" in errors[0]
    assert b"Second answer." in proc.stdout  # the session stayed usable
    assert sessions("P1") == [("failed", "first message"), ("done", "second message")]
    assert "first message" not in json.dumps(server.chat_requests[-1].messages)  # the failed turn is not carried on
    listed = subprocess.run(
        [sys.executable, "-m", "huddle", "sessions", "list", "--json"], capture_output=True, text=True
    )
    assert json.loads(listed.stdout)[0]["unfinished"] == 0  # a failed turn is not offered for redo
