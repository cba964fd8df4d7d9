"""Hostile or broken YAML (recursive aliases, alias bombs, deep nesting, bad bytes, huge files) is one `ConfigError`
naming the file, quickly: never a `RecursionError`, a `UnicodeDecodeError` or a hang."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from huddle.config.yamlfile import MAX_BYTES, MAX_DEPTH, read_yaml
from huddle.errors import ConfigError, ExitCode


def _bomb(levels: int) -> str:
    """The classic "billion laughs": each level is nine aliases of the one before, 9**levels values in all."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        name, previous = f"l{level}", "a" if level == 1 else f"l{level - 1}"
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


CASES = {
    "recursive alias": ("a: &a [*a]\n", "recursive structure"),
    "recursive mapping": ("a: &a {b: *a}\n", "recursive structure"),
    "alias bomb": (_bomb(9), "values once its aliases are expanded"),
    "deep flow nesting": ("agents: " + "[" * 5000 + "]" * 5000 + "\n", f"nested more than {MAX_DEPTH} levels"),
    "deep block nesting": ("".join(f"{'  ' * i}k{i}:\n" for i in range(200)), f"nested more than {MAX_DEPTH} levels"),
    "list as a key": ("? [a]\n: 1\n", "unhashable key"),
}


@pytest.mark.parametrize("name", CASES)
def test_hostile_yaml_is_one_config_error(tmp_path: Path, name: str) -> None:
    text, expected = CASES[name]
    path = tmp_path / "team.yaml"
    path.write_text(text, encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        read_yaml(path)
    assert time.monotonic() - started < 2
    assert str(caught.value).startswith(f"{path}:") and expected in str(caught.value)


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "team.yaml"
    path.write_bytes(b"team:\n  name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"team\.yaml:2: not valid UTF-8 \(byte 0xe9\)"):
        read_yaml(path)


def test_a_control_character_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "team.yaml"
    path.write_text("team:\n  name: a\x1fb\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"team\.yaml:2: control character 0x001f is not allowed in YAML"):
        read_yaml(path)


def test_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "team.yaml"
    path.write_text("# padding\n" * (MAX_BYTES // 10 + 1), encoding="utf-8")
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        read_yaml(path)


def test_shared_anchors_still_load_with_their_lines(tmp_path: Path) -> None:
    """Ordinary anchors and merge keys are unaffected; an aliased value keeps the line of its anchor."""
    path = tmp_path / "huddle.yaml"
    path.write_text("base: &base {model: m, context_window: 10}\nmodels:\n  a: {<<: *base}\n  b: *base\n")
    data, lines = read_yaml(path)
    assert data["models"] == {"a": {"model": "m", "context_window": 10}, "b": {"model": "m", "context_window": 10}}
    assert lines[("models", "b")] == 4 and lines[("base", "model")] == 1


def test_the_cli_prints_one_error_line_for_an_alias_bomb(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(12), encoding="utf-8")  # 9**12 values: hours to walk without the bound
    proc = subprocess.run(
        [sys.executable, "-m", "huddle", "tools", "--team", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == ExitCode.USAGE and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {path}:1:1: invalid YAML: more than 100,000 values")
