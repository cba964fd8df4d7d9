"""A throwaway PostgreSQL 15 server for the stores' tests: initdb in a temp dir, served on 127.0.0.1 on a free port.

initdb refuses to run as root, so as root (CI) the server runs as the ``postgres`` system user that Debian's package
creates, with the temp dir given to it. Missing binaries fail the tests with what to install: never a skip, which
would hide a missing backend.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

BIN = Path("/usr/lib/postgresql/15/bin")
_names = itertools.count(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    """`command` as the ``postgres`` user when we are root (initdb refuses root), else as ourselves."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a running PostgreSQL 15 (trust auth, user ``postgres``) for the whole test session."""
    if not (BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL 15 is missing ({BIN}/initdb): apt-get install postgresql-15")
    folder = Path(tempfile.mkdtemp(prefix="huddle-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", _free_port()

    def run(*args: str) -> None:
        subprocess.run(_as_server_user([str(a) for a in args]), check=True, capture_output=True, timeout=60)

    try:
        run(str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c max_connections=200"
        run(str(BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-o", options, "-w", "start")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {exc.stderr.decode(errors='replace')}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new empty database on the server of `server_url`, as a URL with a password (trust auth ignores it, so
    tests can check that it never shows)."""
    name = f"huddle_{os.getpid()}_{next(_names)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base = server_url.rsplit("/", 1)[0].replace("postgres@", "postgres:s3cret-pw@")
    return f"{base}/{name}"
