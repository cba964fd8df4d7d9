"""Installed console scripts the tests start as real processes (Chroma's server, the reference MCP servers)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def console_script(name: str, installed_by: str) -> str:
    """The script next to this interpreter (a venv that is not activated), else on PATH.

    Missing is a failure, not a skip: the README's test command installs every one of them (`installed_by` says
    which package does), so a test that skipped here would hide a broken install.
    """
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found is not None, f"`{name}` is not installed; it comes with {installed_by}"
    return found
