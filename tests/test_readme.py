"""The docs' promises: CI runs the README's test command, and the CLI the README and docs/cli.md describe is the one
that exists — every command they name, and in docs/cli.md every command, subcommand and flag, with nothing left out."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from huddle.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CLI_DOC = ROOT / "docs" / "cli.md"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = readme_commands()
    test_command = next(c for c in commands if "pytest" in c)  # the set-up's, the first one the README shows
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines
    assert "set -euo pipefail" in ci_lines  # so pytest's exit 5 (no tests) fails CI


@pytest.fixture(scope="module")
def help_text() -> str:
    """`huddle --help` as a user sees it, from the real entry point."""
    return subprocess.run([sys.executable, "-m", "huddle", "--help"], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("doc", [README, CLI_DOC], ids=lambda p: p.name)
def test_documented_cli_commands_exist(doc: Path, help_text: str) -> None:
    documented = set(re.findall(r"`huddle ([a-z][a-z-]*)", doc.read_text(encoding="utf-8")))
    assert documented, f"{doc.name} documents no commands"
    for command in documented:
        assert re.search(rf"│ {command}\b", help_text), f"{doc.name} documents `huddle {command}`, the CLI lacks it"


def cli_commands() -> Iterator[tuple[str, set[str]]]:
    """Every runnable command of the CLI ("run", "memory add", ...) with its long option names; a group that runs
    on its own too (``huddle serve`` beside ``huddle serve keys add``) is one."""

    def walk(command: Any, path: list[str]) -> Iterator[tuple[str, set[str]]]:
        subcommands: dict[str, Any] = getattr(command, "commands", {})
        if path and (not subcommands or getattr(command, "invoke_without_command", False)):
            yield " ".join(path), long_options(command)
        for name, sub in subcommands.items():
            yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


def long_options(command: Any) -> set[str]:
    """The ``--flag`` spellings of a click command's options (both sides of ``--cache/--no-cache``), minus --help."""
    names = {
        opt
        for param in command.params
        if param.param_type_name == "option"
        for opt in (*param.opts, *param.secondary_opts)
        if opt.startswith("--")
    }
    return names - {"--help"}


def cli_doc_sections() -> dict[str, str]:
    """docs/cli.md's per-command sections, ``### `huddle memory add` `` → the section's text."""
    text = CLI_DOC.read_text(encoding="utf-8")
    parts = re.split(r"^### `huddle ([a-z][a-z -]*)`\n", text, flags=re.M)
    return {name: body.split("\n## ", 1)[0] for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_cli_doc_has_a_section_for_every_command_and_no_other() -> None:
    assert set(cli_doc_sections()) == {name for name, _ in cli_commands()}


def test_cli_doc_names_every_flag_of_each_command() -> None:
    sections = cli_doc_sections()
    for name, options in cli_commands():
        section = sections.get(name, "")
        missing = sorted(opt for opt in options if not re.search(rf"`{opt}\b", section))
        assert not missing, f"docs/cli.md, `huddle {name}`: flags not documented: {', '.join(missing)}"
        unknown = sorted(set(re.findall(r"`(--[a-z][a-z-]*)", section)) - options)
        assert not unknown, f"docs/cli.md, `huddle {name}`: documents flags the CLI lacks: {', '.join(unknown)}"


def test_cli_doc_names_every_global_flag() -> None:
    text = CLI_DOC.read_text(encoding="utf-8")
    global_section = text.split("## Global flags", 1)[1].split("\n## ", 1)[0]
    root_options = long_options(typer.main.get_command(app))
    missing = sorted(opt for opt in root_options | {"--help"} if f"`{opt}" not in global_section)
    assert not missing, f"docs/cli.md, global flags not documented: {', '.join(missing)}"
