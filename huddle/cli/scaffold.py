"""``huddle init``: a starter project a user can edit — settings, a team with its own tool, a scenario and its tests.

The project's files are real files in ``huddle/cli/templates/project/`` (package data), copied as they are: each one is
then checked like any user's file (``huddle scenario check``, ``huddle tools --team``, pytest in the project), and
editing the template is editing a file, not a Python string.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from huddle.errors import HuddleError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# Byte-code a test run may leave next to the templates in a checkout; never part of a generated project.
_SKIPPED = ("__pycache__", ".pytest_cache")


class ExistingFilesError(HuddleError):
    """The target folder already holds files of the project; nothing was written (``--force`` overwrites them)."""

    exit_code = 2


def _walk(folder: Traversable, prefix: PurePosixPath) -> Iterator[tuple[PurePosixPath, Traversable]]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name in _SKIPPED or entry.name.endswith(".pyc"):
            continue
        if entry.is_dir():
            yield from _walk(entry, prefix / entry.name)
        else:
            yield prefix / entry.name, entry


def template_files() -> dict[PurePosixPath, Traversable]:
    """The project's files by their path in the project, in a stable order."""
    return dict(_walk(resources.files("huddle.cli") / "templates" / "project", PurePosixPath()))


def scaffold(target: Path, *, force: bool = False) -> list[Path]:
    """Write the starter project into `target` (created if missing) and return the files written.

    Refuses, writing nothing, when any of its files already exists, unless `force`: a user's edited ``huddle.yaml``
    must not be lost to a second ``huddle init``.
    """
    if target.exists() and not target.is_dir():
        raise ExistingFilesError(f"{target}: exists and is not a directory")
    files = template_files()
    existing = [str(relative) for relative in files if (target / relative).exists()]
    if existing and not force:
        raise ExistingFilesError(
            f"{', '.join(existing)} already exist in {target.resolve()}; nothing was written (--force overwrites them)"
        )
    written = []
    for relative, source in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source.read_bytes())
        written.append(path)
    return written
