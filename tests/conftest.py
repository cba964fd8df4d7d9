"""Shared fixtures: every test gets its own data directory and a clean, key-free environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from huddle.engines import exit_without_teardown, temporal_loaded

_EXIT_STATUS = pytest.StashKey[int]()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user config, key or data directory leaks into a test; returns the test's data directory."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "HUDDLE_CONFIG", "HUDDLE_MODEL", "HUDDLE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith("OTEL_")]:  # a developer's collector is not the tests'
        monkeypatch.delenv(name)
    home = tmp_path / "huddle-home"
    monkeypatch.setenv("HUDDLE_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The Temporal tests' clients can abort the interpreter's teardown (`exit_without_teardown`): pytest's exit
    status would be SIGABRT's, whatever the tests did. Last of all, leave with it."""
    if temporal_loaded() and _EXIT_STATUS in config.stash:
        exit_without_teardown(config.stash[_EXIT_STATUS])
