"""Every Python example in docs/python-api.md runs as written, against the scripted server (no key, no network).

Each example runs in a fresh interpreter in a project directory whose huddle.yaml points the default profile at the
scripted server, so a broken import or a renamed method in the public API fails here, not in a reader's hands.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from huddle.testing import Reply, Rule, ScriptedServer

DOC = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
PLAN = json.dumps({"goal": "answer", "steps": [], "done": True})


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    rules = [
        Rule(agent="planner", reply=Reply(content=PLAN)),
        Rule(agent="responder", reply=Reply(content="the scripted answer")),
        Rule(reply=Reply(content="a scripted reply")),
    ]
    with ScriptedServer(rules=rules) as running:
        yield running


def test_the_page_has_examples() -> None:
    assert len(EXAMPLES) >= 6 and any("huddle.run(" in example for example in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_example_runs(example: str, server: ScriptedServer, tmp_path: Path) -> None:
    (tmp_path / "huddle.yaml").write_text(
        f"models:\n  default: {{model: scripted, base_url: '{server.base_url}', max_retries: 0}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if "print(" in example and "huddle.run(" in example:
        assert "the scripted answer" in done.stdout
