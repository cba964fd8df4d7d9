"""Checking a trial: what the conversation shows (tool calls, detected intents) and each expectation's verdict.

The team's messages are read as a user would check them: the tool calls a tool-running member reported (with their
arguments and whether they failed) and the intent an intent-detecting member reported, then every expectation of
the scenario is checked against them and against the trial's database, read-only.
"""

from __future__ import annotations

import ast
import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huddle.evals.results import ApprovalAsked, Check, IntentRecord, ToolCallRecord

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from huddle.agents.approval import ApprovalDecision, PendingCall
    from huddle.evals.spec import CallExpectation, Expectations, ToolExpectation
    from huddle.teams.base import RunResult
    from huddle.teams.results import MessageRecord

_STEP_LINE = re.compile(r"^(?:Step \d+|Request): (?P<name>[A-Za-z0-9_-]{1,64})\(")
_ARROW = re.compile(r"\) -> ")


def tool_calls_in(message: MessageRecord, turn: int) -> list[ToolCallRecord]:
    """The tool calls a tool-running member reported: ``metadata["calls"]`` (JSON) when it gives them, else its
    result lines, ``Step 1: lookup_order(order_id='1042') -> {...}`` (an ``ERROR`` after the arrow: it failed)."""
    if message.metadata.get("kind") != "tool_result":
        return []
    given = message.metadata.get("calls")
    if given:
        return [
            ToolCallRecord(turn=turn, agent=message.source, tool=c["tool"], args=c.get("args", {}), ok=c["ok"])
            for c in json.loads(given)
        ]
    calls = []
    for line in message.content.splitlines():
        start = _STEP_LINE.match(line)
        if start is None:
            continue
        for arrow in _ARROW.finditer(line, start.end()):  # the first arrow after which the call parses
            args = _keyword_literals(line[start.end() : arrow.start()])
            if args is not None:
                ok = not line[arrow.end() :].startswith("ERROR")
                calls.append(ToolCallRecord(turn=turn, agent=message.source, tool=start["name"], args=args, ok=ok))
                break
    return calls


def _keyword_literals(text: str) -> dict[str, Any] | None:
    """``a='x', n=3`` (Python reprs of JSON values) as a dict, or None if it is not that."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        if not isinstance(call, ast.Call) or call.args:
            return None
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    except (SyntaxError, ValueError):
        return None


def intent_in(message: MessageRecord, turn: int) -> IntentRecord | None:
    """The intent an intent-detecting member reported in its metadata (``kind: intent``)."""
    meta = message.metadata
    if meta.get("kind") != "intent" or "intent" not in meta:
        return None
    score = meta.get("score")
    return IntentRecord(
        turn=turn,
        intent=meta["intent"],
        decided_by=meta.get("decided_by", "?"),
        score=float(score) if score else None,
        model_calls=int(meta.get("model_calls", "0") or 0),
    )


@dataclass
class Trace:
    """What happened in one trial, as the expectations read it."""

    customer: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    intents: list[IntentRecord] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    asked: list[ApprovalAsked] = field(default_factory=list)
    results: list[RunResult] = field(default_factory=list)
    _asked_ids: list[str] = field(default_factory=list, repr=False)
    _unmade: list[str] = field(default_factory=list, repr=False)  # this turn's calls asked or denied, not made

    def observe(self, message: MessageRecord) -> None:
        turn = len(self.customer)
        self.tool_calls.extend(tool_calls_in(message, turn))
        intent = intent_in(message, turn)
        if intent is not None:
            self.intents.append(intent)

    def decide(self, decisions: Mapping[str, ApprovalDecision]) -> None:
        """What was decided about the calls asked (``approve``, ``deny: why``), kept with them for the report."""
        for call_id, decision in decisions.items():
            if call_id in self._asked_ids:
                asked = self.asked[self._asked_ids.index(call_id)]
                asked.decision = f"deny: {decision.reason}" if decision.action == "deny" else decision.action
                if decision.action == "deny":
                    self._unmade.append(asked.tool)

    def ask(self, pending: Sequence[PendingCall]) -> None:
        """End of a turn: the calls that wait for approval now are asked. Neither they nor the calls denied in this
        turn were made: their result lines ("waiting", "denied") leave `tool_calls` (a call is recorded when it
        runs, so `tools_not_called` holds for a denied one)."""
        turn = len(self.customer)
        for call in pending:
            if call.id not in self._asked_ids:
                self._asked_ids.append(call.id)
                self.asked.append(ApprovalAsked(turn=turn, agent=call.agent, tool=call.tool, args=call.args))
                self._unmade.append(call.tool)
        for tool in self._unmade:
            line = next((c for c in reversed(self.tool_calls) if c.turn == turn and c.tool == tool and not c.ok), None)
            if line is not None:
                self.tool_calls.remove(line)
        self._unmade.clear()

    @property
    def turns(self) -> int:
        return sum(len(result.decisions) for result in self.results)

    @property
    def cost_usd(self) -> float:
        return float(sum(result.usage.cost_usd for result in self.results))


# --------------------------------------------------------------------------------------------------------------------
# Checking the expectations
# --------------------------------------------------------------------------------------------------------------------


def _same(expected: Any, actual: Any) -> bool:
    """Equal, or the same scalar written differently (YAML ``1042`` against a tool's ``"1042"``)."""
    if expected == actual:
        return True
    scalars = (str, int, float)
    return isinstance(expected, scalars) and isinstance(actual, scalars) and str(expected) == str(actual)


def _matches(expectation: ToolExpectation, call: ToolCallRecord) -> bool:
    if expectation.ok is not None and call.ok != expectation.ok:
        return False
    return _same_call(expectation, call.tool, call.args)


def _same_call(expectation: CallExpectation, tool: str, args: Mapping[str, Any]) -> bool:
    """The call is the expected tool with (at least) the expected arguments."""
    if tool != expectation.name:
        return False
    return all(key in args and _same(value, args[key]) for key, value in expectation.args.items())


def evaluate(expect: Expectations, trace: Trace, database: Path | None) -> list[Check]:
    """Every expectation's verdict, in the order the file lists them."""
    checks: list[Check] = []
    made = "; ".join(c.describe() for c in trace.tool_calls) or "none"
    if expect.intent is not None:
        seen = [i.intent for i in trace.intents]
        wanted = expect.intent
        ok = seen == wanted if isinstance(wanted, list) else bool(seen) and seen[0] == wanted
        checks.append(Check(name="intent", passed=ok, detail="" if ok else f"expected {wanted!r}, detected {seen}"))
    for index, expected in enumerate(expect.tools_called):
        ok = any(_matches(expected, call) for call in trace.tool_calls)
        detail = "" if ok else f"no call {expected.describe()} (calls: {made})"
        checks.append(Check(name=f"tools_called[{index}] {expected.name}", passed=ok, detail=detail))
    for name in expect.tools_not_called:
        calls = [c.describe() for c in trace.tool_calls if c.tool == name]
        detail = f"called: {'; '.join(calls)}" if calls else ""
        checks.append(Check(name=f"tools_not_called {name}", passed=not calls, detail=detail))
    checks.extend(_approval_checks(expect, trace))
    for query, rows in expect.database.items():
        checks.append(_database_check(database, query, rows))
    said = "\n".join(trace.replies).lower()
    for phrase in expect.reply_contains:
        ok = phrase.lower() in said
        detail = "" if ok else f"no reply says it (last reply: {(trace.replies or [''])[-1][:200]!r})"
        checks.append(Check(name=f"reply_contains {phrase!r}", passed=ok, detail=detail))
    for phrase in expect.reply_not_contains:
        ok = phrase.lower() not in said
        checks.append(Check(name=f"reply_not_contains {phrase!r}", passed=ok, detail="" if ok else "a reply says it"))
    if expect.max_turns is not None:
        ok = trace.turns <= expect.max_turns
        detail = "" if ok else f"{trace.turns} agent turns > {expect.max_turns}"
        checks.append(Check(name="max_turns", passed=ok, detail=detail))
    if expect.max_cost_usd is not None:
        ok = trace.cost_usd <= expect.max_cost_usd
        detail = "" if ok else f"${trace.cost_usd:.6f} > ${expect.max_cost_usd}"
        checks.append(Check(name="max_cost_usd", passed=ok, detail=detail))
    return checks


def _approval_checks(expect: Expectations, trace: Trace) -> list[Check]:
    """`asked_approval` (each call must have waited for approval) and `not_asked_approval` (never asked)."""
    checks: list[Check] = []
    asked = "; ".join(a.describe() for a in trace.asked) or "none"
    for index, expected in enumerate(expect.asked_approval):
        ok = any(_same_call(expected, a.tool, a.args) for a in trace.asked)
        detail = "" if ok else f"{expected.describe()} was not asked for approval (asked: {asked})"
        checks.append(Check(name=f"asked_approval[{index}] {expected.name}", passed=ok, detail=detail))
    for name in expect.not_asked_approval:
        seen = [a.describe() for a in trace.asked if a.tool == name]
        detail = f"asked: {'; '.join(seen)}" if seen else ""
        checks.append(Check(name=f"not_asked_approval {name}", passed=not seen, detail=detail))
    return checks


def _database_check(database: Path | None, query: str, expected: list[list[Any]]) -> Check:
    name = f"database {query}"
    if database is None:
        return Check(name=name, passed=False, detail="the scenario has no database")
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            rows = [list(row) for row in connection.execute(query).fetchall()]
    except sqlite3.Error as exc:
        return Check(name=name, passed=False, detail=f"query failed: {exc}")
    ok = len(rows) == len(expected) and all(
        len(a) == len(b) and all(map(_same, b, a)) for a, b in zip(rows, expected, strict=True)
    )
    return Check(name=name, passed=ok, detail="" if ok else f"expected {expected}, got {rows}")
