"""The README's promises: CI runs its test command, and every CLI command it documents exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = readme_commands()
    test_command = next(c for c in commands if "pytest" in c)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines
    assert "set -euo pipefail" in ci_lines  # so pytest's exit 5 (no tests) fails CI


def test_documented_cli_commands_exist() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "huddle", "--help"], capture_output=True, text=True, check=True
    ).stdout
    documented = set(re.findall(r"`huddle ([a-z]+)", (ROOT / "README.md").read_text(encoding="utf-8")))
    assert documented, "README documents no commands"
    for command in documented:
        assert re.search(rf"│ {command}\b", help_text), f"README documents `huddle {command}`, the CLI lacks it"
