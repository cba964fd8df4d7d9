"""Fuzz ``huddle scenario check`` with mutated scenario files: each is one ``error:`` line or accepted, never more.

Run: ``python bench/fuzz_scenarios.py [--files 320] [--seed 0] [--timeout 10] [--show 5]``. The support example's
scenarios are mutated (deleted keys, wrong types, huge values, unknown keys, broken YAML, non-UTF-8 bytes, deep
nesting, aliases) into files next to a copy of its ``kb/``, ``fixtures/`` and ``models/``, so a mutation that
leaves the file valid is accepted as it would be in the example. Each file goes through the CLI app in this process
(typer's CliRunner: the same code as the ``huddle`` command, without a Python start-up per file), under an alarm.

A row counts files, clean errors (exit 2 and exactly one ``error:`` line naming the file and, where the mutation
changed a known field, that field), accepted (exit 0), unclear (any other output or exit code), tracebacks and
hangs (past ``--timeout``). Why the field is checked: a line that names only the file leaves the user to find the
mistake. The same generator, with a fixed seed and fewer files, is tests/test_careless_scenarios.py.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "support"
OUTCOMES = ("clean", "accepted", "unclear", "traceback", "hang")


@dataclass(frozen=True)
class Mutant:
    """One mutated file: its bytes, the mutation's name and the field it changed (None: the file as a whole)."""

    kind: str
    content: bytes
    field: str | None = None
    change: str = ""  # what was changed where, for the examples printed


def base_scenarios() -> list[str]:
    """The example's scenario files, as text."""
    return [path.read_text(encoding="utf-8") for path in sorted(EXAMPLE.glob("*.yaml"))]


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every location in `data` (a mapping key or a list index), outermost first."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


def _field(path: tuple[Any, ...]) -> str:
    """The name an error should mention for `path`: its last mapping key (list indexes are named by their list)."""
    names = [str(part) for part in path if isinstance(part, str)]
    return names[-1] if names else str(path[0])


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def _dump(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000).encode("utf-8")


def _yaml_of(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).removesuffix("\n...\n").strip()


def _replace_text(data: Any, path: tuple[Any, ...], raw: str) -> bytes:
    """`data` dumped with the value at `path` replaced by the YAML text `raw` (for values yaml cannot dump)."""
    marker = "@@HUDDLE_FUZZ@@"
    _set(data, path, marker)
    return _dump(data).replace(f"'{marker}'".encode(), raw.encode()).replace(marker.encode(), raw.encode())


WRONG_VALUES: list[Any] = [42, -1, 3.5, True, None, "text", "", [], [1, "a"], {}, {"x": 1}, [[{"y": None}]]]
# Values only YAML text can hold: dates that do not exist, explicit tags, tags PyYAML's safe loader refuses.
WRONG_TEXT = [
    "2026-13-45",
    "2026-02-30",
    "!!int abc",
    "!!float x",
    "!!binary '%%'",
    "!!python/name:os.system",
    "!!set {a}",
]
HUGE_VALUES = [
    '"' + "x" * 300_000 + '"',  # a long string, within the file size bound
    "1" * 5_000,  # past Python's int-from-string digit limit
    "1.0e+999",  # a float that is infinite
    "-" + "9" * 400,
    "[" + ", ".join(["a"] * 60_000) + "]",  # a long list
    "{" + ", ".join(f"k{i}: {i}" for i in range(20_000)) + "}",
    '"' + "x" * 1_100_000 + '"',  # past the file size bound
]
UNKNOWN_KEYS = ["colour", "extra", "Name", "nam", "expect2", "1", "null", "true", "~", '"with space"', "'0x10'"]
BROKEN = [
    ":",
    "{",
    "}",
    "[",
    "]",
    "&",
    "*",
    "!",
    "|",
    ">",
    "'",
    '"',
    "%",
    "@",
    "`",
    "\t",
    "- ",
    ": :",
    "!!python/object:os.system",
]
BAD_BYTES = [b"\xff", b"\xfe\xff", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\x00", b"\x1b", b"\xe9"]


def delete_key(rng: random.Random, text: str) -> Mutant:
    data = yaml.safe_load(text)
    path = rng.choice([p for p in _paths(data) if not isinstance(p[-1], int)])
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    return Mutant("deleted key", _dump(data), _field(path[:-1]) if len(path) > 1 else None, f"del {path}")


def wrong_type(rng: random.Random, text: str) -> Mutant:
    data = yaml.safe_load(text)
    path = rng.choice(list(_paths(data)))
    if rng.random() < 0.3:
        raw = rng.choice(WRONG_TEXT)
        return Mutant("wrong type", _replace_text(data, path, raw), _field(path), f"{path} = {raw}")
    value = rng.choice(WRONG_VALUES)
    _set(data, path, value)
    return Mutant("wrong type", _dump(data), _field(path), f"{path} = {value!r}")


def huge_value(rng: random.Random, text: str) -> Mutant:
    data = yaml.safe_load(text)
    path = rng.choice(list(_paths(data)))
    raw = rng.choice(HUGE_VALUES)
    return Mutant("huge value", _replace_text(data, path, raw), _field(path), f"{path} = {raw[:20]}... ({len(raw):,})")


def unknown_key(rng: random.Random, text: str) -> Mutant:
    data = yaml.safe_load(text)
    mappings = [()] + [p for p in _paths(data) if isinstance(_get(data, p), dict)]
    path = rng.choice(mappings)
    key = yaml.safe_load(rng.choice(UNKNOWN_KEYS))  # some are not strings: 1, null, true
    target = _get(data, path)
    key = f"extra_{key}" if key in target else key
    target[key] = rng.choice(WRONG_VALUES)
    return Mutant("unknown key", _dump(data), None, f"{path} + {key!r}")


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def broken_yaml(rng: random.Random, text: str) -> Mutant:
    lines = text.splitlines(keepends=True)
    choice = rng.randrange(4)
    if choice == 0:  # cut anywhere
        return Mutant("broken YAML", text[: rng.randrange(1, len(text))].encode())
    index = rng.randrange(len(lines))
    if choice == 1:  # a stray character
        line = lines[index]
        at = rng.randrange(len(line) + 1)
        lines[index] = line[:at] + rng.choice(BROKEN) + line[at:]
    elif choice == 2:  # indentation off by one or a tab
        lines[index] = rng.choice([" ", "\t", "   "]) + lines[index]
    else:  # a key given twice
        lines.insert(index, lines[0])
    return Mutant("broken YAML", "".join(lines).encode())


def non_utf8(rng: random.Random, text: str) -> Mutant:
    raw = text.encode("utf-8")
    choice = rng.randrange(3)
    if choice == 0:
        at = rng.randrange(len(raw) + 1)
        raw = raw[:at] + rng.choice(BAD_BYTES) + raw[at:]
    elif choice == 1:
        raw = text.replace("order", "ordér").encode(rng.choice(["latin-1", "utf-16", "utf-16-le", "cp1252"]))
    else:
        raw = rng.choice([b"\xef\xbb\xbf", b"\xff\xfe", b"\x00\x00\xfe\xff"]) + raw
    return Mutant("non-UTF-8", raw)


def deep_nesting(rng: random.Random, text: str) -> Mutant:
    data = yaml.safe_load(text)
    path = rng.choice(list(_paths(data)))
    depth = rng.choice([10, 63, 65, 200, 5_000, 200_000])
    style = rng.randrange(3)
    if style == 0:
        raw = "[" * depth + "1" + "]" * depth
    elif style == 1:
        raw = "{a: " * depth + "1" + "}" * depth
    else:
        raw = "[" * depth  # unclosed
    return Mutant("deep nesting", _replace_text(data, path, raw), _field(path))


ALIAS_BOMB = "&a0 [x, x, x, x, x, x, x, x, x, x]" + "".join(
    f", {{a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]}}" for i in range(1, 9)
)
ALIASED = {  # value text put under `expect:` (as its flow mapping) -> the field the error must name
    "{max_turns: &n 3, intent: *n}": "intent",  # an alias of the wrong type
    "&loop {reply_contains: [*loop]}": "expect",  # a recursive alias
    "{intent: *nowhere}": "expect",  # an alias nobody anchored
    "{<<: {max_turns: many}}": "max_turns",  # a merge key bringing a wrong type
    "{<<: &m {intent: refund}, *m : 1}": "expect",  # an alias as a key
    f"{{reply_contains: [{ALIAS_BOMB}]}}": "expect",  # an alias bomb
}


def aliases(rng: random.Random, text: str) -> Mutant:
    data = yaml.safe_load(text)
    raw, field = rng.choice(list(ALIASED.items()))
    return Mutant("aliases", _replace_text(data, ("expect",), raw), field, raw[:40])


def whole_file(rng: random.Random, text: str) -> Mutant:
    return Mutant(
        "whole file",
        rng.choice(
            [
                b"",
                b"\n",
                b"---\n",
                b"~\n",
                b"[]\n",
                b"- a\n- b\n",
                b"42\n",
                b"just text\n",
                text.encode() * 2,
                (text + "---\n" + text).encode(),
                bytes(rng.randrange(256) for _ in range(300)),
            ]
        ),
    )


MUTATIONS: list[Callable[[random.Random, str], Mutant]] = [
    delete_key,
    wrong_type,
    huge_value,
    unknown_key,
    broken_yaml,
    non_utf8,
    deep_nesting,
    aliases,
    whole_file,
]


def mutants(count: int, seed: int) -> list[Mutant]:
    """`count` mutated files, the same for the same seed; the mutations take turns."""
    rng = random.Random(seed)
    bases = base_scenarios()
    return [MUTATIONS[i % len(MUTATIONS)](rng, rng.choice(bases)) for i in range(count)]


def workspace(root: Path) -> Path:
    """A folder holding the example's kb/, fixtures/ and models/, where mutated files resolve their paths."""
    for name in ("kb", "fixtures", "models"):
        shutil.copytree(EXAMPLE / name, root / name)
    return root


class Hang(BaseException):
    """A check past its time (a BaseException, so nothing in the CLI can swallow it)."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang


@dataclass(frozen=True)
class Verdict:
    outcome: str
    detail: str


def check(path: Path, mutant: Mutant, timeout_s: float) -> Verdict:
    """Run ``huddle scenario check PATH`` in this process and say how it ended."""
    from typer.testing import CliRunner

    from huddle.cli.app import app

    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        result = CliRunner().invoke(app, ["scenario", "check", str(path)])
    except Hang:
        return Verdict("hang", f"past {timeout_s:g} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return Verdict("traceback", f"{type(result.exception).__name__}: {result.exception}"[:300])
    if result.exit_code == 0:
        return Verdict("accepted", f"{mutant.change}: {result.stdout.strip()[:200]}")
    lines = result.stderr.splitlines()
    line = lines[0] if lines else ""
    # A file that is not YAML has no fields yet: its line (and column) is where the mistake is.
    unparsed = re.search(
        rf"{re.escape(path.name)}(:\d+)*: (invalid YAML|larger than|not valid UTF-8|control char)", line
    )
    named = path.name in line and (mutant.field is None or mutant.field in line or unparsed is not None)
    if result.exit_code == 2 and len(lines) == 1 and line.startswith("error:") and named and not result.stdout:
        return Verdict("clean", line[:200])
    return Verdict("unclear", f"exit {result.exit_code}, field {mutant.field!r}: {result.stderr[:300]!r}")


def fuzz(count: int, seed: int, timeout_s: float) -> list[tuple[Mutant, Verdict]]:
    with tempfile.TemporaryDirectory(prefix="huddle-fuzz-") as tmp:
        root = workspace(Path(tmp))
        verdicts = []
        for i, mutant in enumerate(mutants(count, seed)):
            path = root / f"m{i:04d}.yaml"
            path.write_bytes(mutant.content)
            verdicts.append((mutant, check(path, mutant, timeout_s)))
        return verdicts


def table(verdicts: list[tuple[Mutant, Verdict]]) -> str:
    kinds = list(dict.fromkeys(m.kind for m, _ in verdicts))
    counts = Counter((m.kind, v.outcome) for m, v in verdicts)
    header = f"{'mutation':<14}{'files':>7}" + "".join(f"{name:>11}" for name in OUTCOMES)
    rows = [header]
    for kind in [*kinds, "all"]:
        selected = kinds if kind == "all" else [kind]
        total = sum(counts[(k, o)] for k in selected for o in OUTCOMES)
        rows.append(f"{kind:<14}{total:>7}" + "".join(f"{sum(counts[(k, o)] for k in selected):>11}" for o in OUTCOMES))
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="Seconds one check may take.")
    parser.add_argument("--show", type=int, default=5, help="Examples shown per outcome other than clean.")
    args = parser.parse_args()
    started = time.monotonic()
    verdicts = fuzz(args.files, args.seed, args.timeout)
    print(table(verdicts))
    print(f"{len(verdicts)} files in {time.monotonic() - started:.1f} s (seed {args.seed})")
    for outcome in ("traceback", "hang", "unclear", "accepted"):
        for mutant, verdict in [(m, v) for m, v in verdicts if v.outcome == outcome][: args.show]:
            print(f"{outcome:>9} [{mutant.kind}] {verdict.detail}")
    return 0 if all(v.outcome in ("clean", "accepted") for _, v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
