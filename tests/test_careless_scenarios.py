"""Careless scenario files get one ``error:`` line naming the file and the field (exit 2), never a traceback.

A fixed sample of bench/fuzz_scenarios.py's mutations (its full run is in docs/benchmarks.md), then the mistakes it
found, each on its own: values PyYAML cannot convert, a key given twice, empty names and texts that made an
expectation check nothing.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from huddle.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "support" / "refund-damaged-item.yaml"


def fuzzer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_scenarios", ROOT / "bench" / "fuzz_scenarios.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_sample_of_mutated_scenario_files_is_one_error_line_or_accepted() -> None:
    verdicts = fuzzer().fuzz(45, seed=15, timeout_s=20)  # 5 of each mutation

    bad = [(m.kind, v.outcome, v.detail) for m, v in verdicts if v.outcome not in ("clean", "accepted")]
    assert bad == []
    assert sum(verdict.outcome == "clean" for _, verdict in verdicts) >= 30


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    """A copy of a valid example scenario with the files it names, to be edited by each test."""
    for name in ("kb", "fixtures", "models"):
        shutil.copytree(EXAMPLE.parent / name, tmp_path / name)
    path = tmp_path / "s.yaml"
    path.write_text(EXAMPLE.read_text())
    return path


def check_error(path: Path) -> str:
    result = CliRunner().invoke(app, ["scenario", "check", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {path}:")
    return line


@pytest.mark.parametrize(
    ("value", "problem"),
    [("1" * 5000, "value has 5000 digits"), ("2026-13-45", "month must be in 1..12")],
    ids=["5000 digits", "no such date"],
)
def test_a_value_pyyaml_cannot_convert_is_an_error_at_its_line(scenario: Path, value: str, problem: str) -> None:
    scenario.write_text(scenario.read_text().replace("max_turns: 16", f"max_turns: {value}"))

    line = check_error(scenario)

    assert "s.yaml:19:14: invalid YAML: cannot read this value: " in line and problem in line
    assert "set_int_max_str_digits" not in line


def test_a_key_given_twice_is_refused_not_silently_overridden(scenario: Path) -> None:
    scenario.write_text(scenario.read_text() + "team: support-cheap\n")

    line = check_error(scenario)

    assert line.endswith("s.yaml:21:1: invalid YAML: 'team' is given twice (first on line 3)")


@pytest.mark.parametrize(
    ("field", "value"),
    [("tools_not_called", '[""]'), ("reply_contains", '[""]'), ("reply_not_contains", '[""]'), ("intent", '""')],
)
def test_an_empty_name_or_text_that_would_check_nothing_is_refused(scenario: Path, field: str, value: str) -> None:
    text = "\n".join(line for line in scenario.read_text().splitlines() if not line.startswith(f"  {field}:"))
    scenario.write_text(text.replace("expect:\n", f"expect:\n  {field}: {value}\n") + "\n")

    line = check_error(scenario)

    assert f"expect.{field}" in line and "at least 1 character" in line
