"""Safe built-in tools for the assistant team: arithmetic, the current time, and notes kept in a workspace.

Small models are bad at arithmetic and do not know today's date, and a team needs somewhere to put intermediate
results; these tools cover that without giving a model a shell. Each one is defensive about its input because the
input comes from a model: the calculator walks the expression's syntax tree instead of calling ``eval`` and bounds
the size of numbers, and the notes tools cannot reach outside their workspace directory.
"""

from __future__ import annotations

import ast
import math
import operator
import os
import shlex
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from huddle.secrets import scrubbed_env
from huddle.tools import Tool, ToolRegistry, tool

__all__ = [
    "MAX_NOTE_BYTES",
    "builtin_registry",
    "calculator",
    "clock",
    "make_notes_tools",
]

Number = int | float

# An expression longer than this is not arithmetic a model should be doing in one call, and bounding it bounds the
# parser's recursion depth too.
MAX_EXPRESSION_CHARS = 500
# Integers above 2**4096 (about 1,233 digits) are refused: enough for any real calculation, and it keeps ``**`` from
# freezing the process on something like 10**10**10.
MAX_INT_BITS = 4096
# Floats this small in magnitude are shown as ints when they are whole; above 2**53 not every int is a float.
_EXACT_FLOAT_LIMIT = 2.0**53
MAX_NOTE_BYTES = 100_000
# list_notes stops after this many names: the listing goes into a model's context.
MAX_LISTED_NOTES = 500
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# calculator
# --------------------------------------------------------------------------------------------------------------------


def _checked_pow(base: Number, exponent: Number) -> Number:
    """``base ** exponent``, refused before computing when the result would be an integer of more than MAX_INT_BITS."""
    # bit_length - 1 <= log2|base|, so the product is a lower bound on the result's bits: no small result is refused.
    if isinstance(base, int) and isinstance(exponent, int) and exponent * (abs(base).bit_length() - 1) > MAX_INT_BITS:
        raise ValueError(f"result too large: the integer would exceed {MAX_INT_BITS} bits")
    result: Number = base**exponent
    return result


_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _checked_pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FORBIDDEN = {
    ast.Name: "names",
    ast.Call: "function calls",
    ast.Attribute: "attributes",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambdas",
}


def _check_size(value: Number) -> Number:
    """Refuse results that are complex, not finite or too large, after every operation (not just ``**``)."""
    if isinstance(value, complex):
        raise ValueError("the result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("result too large (or not a number)")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ValueError(f"result too large: the integer exceeds {MAX_INT_BITS} bits")
    return value


def _evaluate(node: ast.AST) -> Number:
    """Evaluate an arithmetic syntax tree, allowing only numbers, the listed operators and parentheses."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value  # strings, complex numbers, True/False and None all fall through to the error
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        try:
            return _check_size(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ValueError("division by zero") from None
        except OverflowError:
            raise ValueError("result too large") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.Constant):
        raise ValueError(f"only numbers are allowed, not {node.value!r}")
    what = _FORBIDDEN.get(type(node))
    if what:
        raise ValueError(f"{what} are not allowed; use numbers, + - * / // % ** and parentheses only")
    raise ValueError(f"unsupported syntax ({type(node).__name__}); use numbers, + - * / // % ** and parentheses only")


@tool(max_result_tokens=200)
def calculator(expression: str) -> Number:
    """Evaluate an arithmetic expression, e.g. "17*23" or "(1+2)/4".

    Args:
        expression: Numbers with + - * / // % ** and parentheses; no names or functions.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression too long ({len(expression)} characters, at most {MAX_EXPRESSION_CHARS})")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a valid arithmetic expression: {exc.msg}") from None
    result = _evaluate(tree)
    if isinstance(result, float) and result.is_integer() and abs(result) < _EXACT_FLOAT_LIMIT:
        return int(result)
    return result


# --------------------------------------------------------------------------------------------------------------------
# clock
# --------------------------------------------------------------------------------------------------------------------


@tool(max_result_tokens=200)
def clock(timezone: str = "UTC") -> dict[str, str | int]:
    """Current date and time (a summary sentence, ISO datetime, date, year, weekday) in a timezone.

    Args:
        timezone: An IANA timezone name such as "UTC", "Europe/Paris" or "America/New_York".
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown timezone {timezone!r}; use an IANA name such as 'UTC' or 'Europe/Paris'") from None
    now = datetime.now(zone)
    weekday = _WEEKDAYS[now.weekday()]
    return {
        # The sentence a responder repeats; small models misread the weekday out of the fields below.
        "summary": f"{weekday}, {now.day} {_MONTHS[now.month - 1]} {now.year}, {now:%H:%M} ({timezone})",
        "datetime": now.isoformat(timespec="seconds"),
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M:%S"),
        "year": now.year,
        # Not strftime("%A"): that follows the process locale, and the model should always get English.
        "weekday": weekday,
        "timezone": timezone,
    }


# --------------------------------------------------------------------------------------------------------------------
# notes
# --------------------------------------------------------------------------------------------------------------------


def _note_path(root: Path, name: str) -> Path:
    """The file for note `name` inside `root`; refuses anything that could reach outside it.

    The textual checks give clear messages for the common mistakes; resolving the path and checking it is still
    inside the (resolved) workspace is what actually stops escapes, symlinks included.
    """
    clean = name.strip()
    if not clean:
        raise ValueError("note name is empty")
    if "\x00" in clean:
        raise ValueError("note name contains a NUL character")
    if PurePosixPath(clean).is_absolute() or PureWindowsPath(clean).is_absolute() or PureWindowsPath(clean).drive:
        raise ValueError(f"note name {name!r} is an absolute path; use a relative name like 'plan.md'")
    if ".." in PureWindowsPath(clean).parts:  # splits on both / and \
        raise ValueError(f"note name {name!r} contains '..'; notes stay inside the workspace")
    base = root.resolve()
    target = (base / clean).resolve()
    if target == base or not target.is_relative_to(base):
        raise ValueError(f"note name {name!r} points outside the workspace")
    return target


def make_notes_tools(workspace: Path) -> list[Tool]:
    """``write_note``, ``read_note`` and ``list_notes``, confined to `workspace` (created on first write)."""
    root = Path(workspace)

    @tool(name="write_note", side_effects="write")
    def write_note(name: str, text: str) -> str:
        """Save text as a note in the workspace, replacing a note of the same name.

        Args:
            name: Relative file name such as "plan.md" or "research/sources.txt".
            text: The note's full content (at most 100 kB).
        """
        size = len(text.encode("utf-8"))
        if size > MAX_NOTE_BYTES:
            raise ValueError(f"note too large ({size} bytes, at most {MAX_NOTE_BYTES})")
        path = _note_path(root, name)
        if path.is_dir():
            raise ValueError(f"{name!r} is a folder, not a note")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return f"saved note {name.strip()!r} ({size} bytes)"

    @tool(name="read_note")
    def read_note(name: str) -> str:
        """Read a note from the workspace.

        Args:
            name: The note's relative file name, as given to write_note or shown by list_notes.
        """
        path = _note_path(root, name)
        if not path.is_file():
            raise ValueError(f"no note named {name.strip()!r}; call list_notes to see the existing ones")
        size = path.stat().st_size
        if size > MAX_NOTE_BYTES:
            raise ValueError(f"note too large to read ({size} bytes, at most {MAX_NOTE_BYTES})")
        return path.read_text(encoding="utf-8", errors="replace")

    @tool(name="list_notes")
    def list_notes() -> list[str]:
        """List the names of the notes in the workspace."""
        if not root.is_dir():
            return []
        base = root.resolve()
        names: list[str] = []
        # followlinks=False: a symlinked folder is never walked, and a symlinked file is listed only if it stays inside.
        for folder, dirs, files in os.walk(base, followlinks=False):
            dirs.sort()
            for file in sorted(files):
                path = Path(folder) / file
                if path.resolve().is_relative_to(base):
                    names.append(path.relative_to(base).as_posix())
                if len(names) >= MAX_LISTED_NOTES:
                    return names
        return names

    return [write_note, read_note, list_notes]


SHELL_TIMEOUT_S = 30.0
MAX_SHELL_OUTPUT_CHARS = 20_000


def make_shell_tool(workspace: Path, timeout_s: float = SHELL_TIMEOUT_S) -> Tool:
    """``run_command``: one program run in `workspace` with a timeout. Offered only when a team enables it.

    No shell is involved (the command is split like a shell would, then executed directly), so pipes, redirections
    and ``;`` are not interpreted; the working directory is the workspace; the process is killed at the timeout.
    It runs without the environment's secrets (`scrubbed_env`): ``sh -c`` or a script could otherwise hand a key to
    the model in a shape `redact` does not recognise (reversed, encoded).
    """
    root = Path(workspace)

    @tool(name="run_command", side_effects="external", timeout_s=timeout_s + 5)
    def run_command(command: str) -> dict[str, str | int]:
        """Run one program in the team's workspace and return its exit code and output.

        Args:
            command: The program and its arguments, e.g. "python --version" (no pipes or redirections).
        """
        argv = shlex.split(command)
        if not argv:
            raise ValueError("empty command")
        root.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                argv,
                cwd=root,
                env=scrubbed_env(),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise ValueError(f"no such program: {argv[0]!r}") from None
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{argv[0]!r} did not finish within {timeout_s:g}s and was killed") from None
        return {
            "exit_code": done.returncode,
            "stdout": done.stdout[-MAX_SHELL_OUTPUT_CHARS:],
            "stderr": done.stderr[-MAX_SHELL_OUTPUT_CHARS:],
        }

    return run_command


def builtin_registry(workspace: Path, *, shell: bool = False) -> ToolRegistry:
    """The built-in tools: calculator, clock and notes in `workspace`; ``run_command`` only if `shell` is enabled."""
    tools = [calculator, clock, *make_notes_tools(workspace)]
    if shell:
        tools.append(make_shell_tool(workspace))
    return ToolRegistry(tools)
