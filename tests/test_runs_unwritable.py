"""A data dir whose ``runs/`` cannot be written (read-only, or ``runs`` is a file) costs the trace, not the run.

Tests run as root, where permissions are not enforced, so ``runs`` is made a file. The run still answers, with one
warning line naming the folder and what to do; ``huddle runs`` and ``huddle trace`` on such a dir do not fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from huddle.testing import Reply, Rule, ScriptedServer

TEAM = "team: {name: duo, max_turns: 4}\nagents:\n  - {role: memory}\n  - {role: responder}\n"


def huddle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huddle", *args], capture_output=True, text=True, timeout=120, env={**os.environ}
    )


def test_runs_being_a_file_is_one_warning_and_the_run_answers(isolated_env: Path, tmp_path: Path) -> None:
    isolated_env.mkdir()
    (isolated_env / "runs").write_text("not a folder\n")
    with ScriptedServer(rules=[Rule(agent="responder", reply=Reply(content="Hello there."))]) as server:
        (tmp_path / "huddle.yaml").write_text(
            f"models:\n  default: {{model: scripted, base_url: '{server.base_url}'}}\n"
        )
        (tmp_path / "team.yaml").write_text(TEAM)
        run = huddle("run", "say hello", "--team", "team.yaml", "--json")

    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["answer"] == "Hello there."
    assert "Traceback" not in run.stderr
    [warning] = [line for line in run.stderr.splitlines() if "runs" in line]
    assert warning.startswith("warning: run traces cannot be written to ") and str(isolated_env / "runs") in warning
    assert "HUDDLE_HOME" in warning
    listing = huddle("runs")
    assert (listing.returncode, listing.stdout, "Traceback" in listing.stderr) == (0, "", False)
    missing = huddle("trace", json.loads(run.stdout)["run_id"])
    assert missing.returncode == 1 and missing.stderr.startswith("error: no trace for run")
