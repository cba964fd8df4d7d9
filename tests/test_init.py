"""``huddle init`` as a user runs it: real subprocesses, then the generated project's own checks and tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_FILES = {
    "README.md",
    "huddle.yaml",
    "kb/shipping.md",
    "pyproject.toml",
    "scenarios/models/scripted.yaml",
    "scenarios/shipping-quote.yaml",
    "shop_tools.py",
    "team.yaml",
    "tests/test_helpdesk.py",
}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A command as a user types it, in `cwd`, with the test's isolated environment (no key, own data dir)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
    )


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_the_generated_project_checks_and_passes_its_own_tests_offline(tmp_path: Path) -> None:
    created = run("-m", "huddle", "init", "demo")
    assert created.returncode == 0, created.stderr
    demo = tmp_path / "demo"
    assert files_in(demo) == PROJECT_FILES
    assert f"created {Path('demo') / 'team.yaml'}" in created.stdout
    assert "next: cd demo && python -m pytest -q" in created.stdout

    models = run("-m", "huddle", "models", "--json", cwd=demo)
    assert models.returncode == 0, models.stderr
    profiles = {row["name"]: row for row in json.loads(models.stdout)}
    assert {"local", "openai", "ollama", "scripted"} <= set(profiles)
    assert profiles["local"]["active"], "the embedded model must be active: it needs no key"
    assert profiles["openai"]["api_key_env"] == "OPENAI_API_KEY" and profiles["openai"]["input_per_mtok"] > 0
    assert profiles["ollama"]["base_url"] == "http://localhost:11434/v1"

    check = run("-m", "huddle", "scenario", "check", "scenarios", cwd=demo)
    assert check.returncode == 0, check.stderr
    assert "ok  shipping-quote" in check.stdout

    tools = run("-m", "huddle", "tools", "--team", "team.yaml", cwd=demo)
    assert tools.returncode == 0, tools.stderr
    assert "team helpdesk" in tools.stdout
    assert "shipping_quote(country: string, weight_kg: number)" in tools.stdout

    scripted = run("-m", "huddle", "--model", "scripted", "run", "--team", "team.yaml", "Hi", "--json", cwd=demo)
    assert scripted.returncode == 0, scripted.stderr
    assert json.loads(scripted.stdout)["answer"].startswith("Hello from the scripted model")

    tests = run("-m", "pytest", "-q", cwd=demo)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout


def test_init_refuses_to_overwrite_files_unless_forced(tmp_path: Path) -> None:
    assert run("-m", "huddle", "init").returncode == 0  # DIR defaults to the current folder
    config = tmp_path / "huddle.yaml"
    config.write_text("model: openai\n")

    again = run("-m", "huddle", "init")
    assert again.returncode == 2
    assert again.stderr.startswith("error: ") and len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert "huddle.yaml" in again.stderr and "--force" in again.stderr
    assert config.read_text() == "model: openai\n", "a refused init must not write anything"

    forced = run("-m", "huddle", "init", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "model: local" in config.read_text()
