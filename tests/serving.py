"""A real ``huddle serve`` app on a real socket for the serve tests: uvicorn in a thread, on a free loopback port.

Tests talk to it with real clients (the openai SDK, the a2a-sdk client, httpx, Chromium), never through an in-process
transport, so HTTP framing, SSE and the app's lifespan are what production runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from huddle.config.settings import Settings, load_settings
from huddle.testing import ScriptedServer

_START_TIMEOUT_S = 20.0


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """Run `app` until the block ends; yields its base URL (``http://127.0.0.1:PORT``)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(_START_TIMEOUT_S)


def scripted_settings(folder: Path, server: ScriptedServer, extra_yaml: str = "") -> Settings:
    """Settings whose default profile is the scripted server, with their data directory under `folder`."""
    config = folder / "huddle.yaml"
    config.write_text(
        f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: 0}}\n"
        f"data_dir: {folder / 'data'}\n{extra_yaml}"
    )
    return load_settings(config)
