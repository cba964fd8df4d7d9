"""A session is leased by one process at a time: an exclusive OS lock on a small file beside the sessions store.

Two processes on one session (``huddle chat`` in two terminals, a ``--resume`` while the turn is still live) would
each run turns from their own copy of the conversation: one process's turns are then missing from the other's, and a
live turn is redone. So a process leases a session while it has it open, and a second one is refused at once with the
holder's process id (waiting would hang a terminal on a chat that may never end).

The lock is the operating system's (``flock``, or ``msvcrt.locking`` on Windows), so it ends with its holder however
that ends, a SIGKILL included: there is no heartbeat to keep and no stale lease to clean up. The file holds the
holder's pid for the message; it is never deleted (deleting a lock file lets two processes lock two different files).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from huddle.errors import HuddleError
from huddle.storage.sqlite import StorageError


class SessionBusyError(HuddleError):
    """Another process has the session open; the message names it and what to do."""


class SessionLease:
    """The lock on one session, held from `acquire` until `release` (or the process ends)."""

    def __init__(self, folder: Path, session_id: str) -> None:
        self.session_id = session_id
        # Hashed: a session id is the user's text, and may hold characters no file name can.
        self.path = folder / f"{hashlib.sha256(session_id.encode()).hexdigest()[:24]}.lock"
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        """Lock the session for this process, or raise `SessionBusyError` naming the process that has it."""
        if self._file is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            file = self.path.open("a+b")
        except OSError as exc:
            raise StorageError(
                f"cannot create the lock {self.path} of session {self.session_id} ({exc.strerror or exc}); "
                f"make {self.path.parent.parent} writable, or choose another --data-dir"
            ) from None
        if not _try_lock(file):
            file.seek(1)
            holder = file.read(20).decode("ascii", "replace").strip() or "unknown"
            file.close()
            raise SessionBusyError(
                f"session {self.session_id} is in use by process {holder}; finish or close it there first "
                "(or use another --session)"
            )
        file.seek(0)
        file.truncate()
        file.write(f" {os.getpid()}\n".encode())  # byte 0 is the locked one (Windows locks a region)
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases its lock
            self._file = None


@contextmanager
def exclusive(path: Path, what: str, timeout_s: float = 60.0) -> Iterator[None]:
    """Hold the exclusive lock on `path` for the block, waiting for another process that has it (up to `timeout_s`).

    For short critical sections across processes, such as creating a store that two processes may open first at
    once (Chroma's first open creates its tables and fails with "table ... already exists" in the loser).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file = path.open("a+b")
    except OSError as exc:
        raise StorageError(
            f"cannot create the lock {path} for {what} ({exc.strerror or exc}); make {path.parent} writable, or "
            "choose another --data-dir"
        ) from None
    with file:  # closing the file releases its lock
        deadline = time.monotonic() + timeout_s
        while not _try_lock(file):
            if time.monotonic() > deadline:
                raise StorageError(f"{what}: another process held {path} for over {timeout_s:g} s; try again")
            time.sleep(0.05)
        yield


def _try_lock(file: IO[bytes]) -> bool:
    """Take the exclusive lock without waiting; False when another open file (any process) holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            file.seek(0)
            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
