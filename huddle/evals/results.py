"""A suite's results: each expectation's verdict, each trial, each scenario with pass^k, and the JUnit report.

pass^k (the chance that all of k trials of a scenario pass) is estimated as C(c,k)/C(n,k) from c passes in n trials
and averaged over scenarios, as in tau-bench: it measures how reliably a team behaves, not how lucky one run was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal
from xml.etree import ElementTree

from pydantic import BaseModel, Field, computed_field

from huddle.usage import Totals

if TYPE_CHECKING:
    from huddle.evals.spec import Scenario


class Check(BaseModel):
    """One expectation's verdict; `name` says which one (``tools_called[1] issue_refund``), `detail` why it failed."""

    name: str
    passed: bool
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}" if self.detail else self.name


class ToolCallRecord(BaseModel):
    """A tool call the team made, as its message reported it."""

    turn: int
    agent: str
    tool: str
    args: dict[str, Any]
    ok: bool

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"{self.tool}({args}){'' if self.ok else ' ERROR'}"


class ApprovalAsked(BaseModel):
    """A tool call that waited for approval, and what was decided about it (empty while nothing was)."""

    turn: int
    agent: str
    tool: str
    args: dict[str, Any]
    decision: str = ""

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"{self.tool}({args}){f' {self.decision}' if self.decision else ''}"


class IntentRecord(BaseModel):
    """The intent detected for one customer message and what decided it (``embedding``, ``context``, ``model``)."""

    turn: int
    intent: str
    decided_by: str
    score: float | None = None
    model_calls: int = 0


class TrialResult(BaseModel):
    """One trial of one scenario: verdict, the failing expectations, and what it took."""

    scenario: str
    trial: int
    status: Literal["pass", "fail", "error"]
    failures: list[str] = Field(default_factory=list, description="Each failing expectation, named, with why.")
    error: str | None = None
    checks: list[Check] = Field(default_factory=list)
    customer_turns: int = 0
    turns: int = 0
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    intents: list[IntentRecord] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    approvals: list[ApprovalAsked] = Field(default_factory=list, description="Calls that waited for approval.")
    customer: list[str] = Field(default_factory=list)
    replies: list[str] = Field(default_factory=list)
    usage_by_agent: dict[str, Totals] = Field(default_factory=dict)
    session_id: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ScenarioResult(BaseModel):
    """All trials of one scenario."""

    name: str
    path: str
    trials: list[TrialResult]
    passes: int
    pass_hat_k: dict[str, float]


class SuiteResult(BaseModel):
    """A suite: every scenario's trials, pass^1..pass^n over scenarios, and the totals."""

    passed: bool
    scenarios: list[ScenarioResult]
    trials: int
    pass_hat_k: dict[str, float]
    cost_usd: float
    tokens: int
    duration_s: float


def pass_hat_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """pass^k over scenarios given (passes c, trials n) each: the mean of C(c,k)/C(n,k) (tau-bench's estimator)."""
    usable = [(c, n) for c, n in counts if n >= k]
    if not usable:
        return 0.0
    return sum(math.comb(c, k) / math.comb(n, k) for c, n in usable) / len(usable)


def _pass_table(counts: Sequence[tuple[int, int]], trials: int) -> dict[str, float]:
    return {str(k): round(pass_hat_k(counts, k), 6) for k in range(1, trials + 1)}


def summarise(
    scenarios: Sequence[Scenario], results: Sequence[TrialResult], trials: int, duration: float
) -> SuiteResult:
    """The suite's result: each scenario's trials and pass^1..pass^trials, then the same over all scenarios."""
    verdicts = []
    for scenario in scenarios:
        mine = [r for r in results if r.scenario == scenario.name]
        passes = sum(r.passed for r in mine)
        verdicts.append(
            ScenarioResult(
                name=scenario.name,
                path=str(scenario.path or ""),
                trials=mine,
                passes=passes,
                pass_hat_k=_pass_table([(passes, len(mine))], trials),
            )
        )
    counts = [(s.passes, len(s.trials)) for s in verdicts]
    return SuiteResult(
        passed=all(r.passed for r in results),
        scenarios=verdicts,
        trials=trials,
        pass_hat_k=_pass_table(counts, trials),
        cost_usd=round(sum(r.cost_usd for r in results), 8),
        tokens=sum(r.tokens for r in results),
        duration_s=round(duration, 3),
    )


def junit_xml(suite: SuiteResult) -> str:
    """The suite as JUnit XML: one test suite per scenario, one test case per trial, failures named."""
    root = ElementTree.Element("testsuites", name="huddle scenarios", time=f"{suite.duration_s:.3f}")
    for scenario in suite.scenarios:
        failures = sum(t.status == "fail" for t in scenario.trials)
        errors = sum(t.status == "error" for t in scenario.trials)
        node = ElementTree.SubElement(
            root,
            "testsuite",
            name=scenario.name,
            tests=str(len(scenario.trials)),
            failures=str(failures),
            errors=str(errors),
            time=f"{sum(t.latency_s for t in scenario.trials):.3f}",
        )
        for trial in scenario.trials:
            case = ElementTree.SubElement(
                node, "testcase", classname=scenario.name, name=f"trial {trial.trial}", time=f"{trial.latency_s:.3f}"
            )
            if trial.status == "error":
                ElementTree.SubElement(case, "error", message=trial.error or "error").text = trial.error
            elif trial.status == "fail":
                ElementTree.SubElement(case, "failure", message=trial.failures[0]).text = "\n".join(trial.failures)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True)


def counts(suite: SuiteResult) -> Mapping[str, int]:
    """Trials per status across the suite."""
    statuses = [t.status for s in suite.scenarios for t in s.trials]
    return {status: statuses.count(status) for status in ("pass", "fail", "error")}
