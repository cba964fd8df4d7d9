"""Scenarios: a scripted (or simulated) customer, a team, and outcomes that can be checked, run like a test suite.

A scenario file (`huddle.evals.spec`) says which team serves the customer, what the customer says and what must be
true afterwards (a user turn may approve or deny the calls a paused turn left waiting: `huddle.evals.approvals`);
`huddle.evals.runner` runs its trials, `huddle.evals.checks` checks them and `huddle.evals.results` holds the
verdicts, pass^k and the JUnit report. This module is the API over them, and re-exports their public names.

As in tau-bench, a trial passes only if the database ends in the expected state and the customer was told what they
had to be told: a reply that sounds right does not pass a trial whose refund never happened. Every trial runs on a
fresh team, a fresh copy of the database and a fresh memory scope for the customer, so trials are independent and
pass^k measures how reliably the team behaves, not how lucky one run was.

`run` (or ``huddle scenario run``) runs a suite; ``--record``/``--replay`` put a `huddle.evals.cassette.Cassette` under
every model client so a suite recorded once runs offline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huddle.errors import ConfigError
from huddle.evals.checks import Trace, evaluate, intent_in, tool_calls_in
from huddle.evals.results import (
    ApprovalAsked,
    Check,
    IntentRecord,
    ScenarioResult,
    SuiteResult,
    ToolCallRecord,
    TrialResult,
    counts,
    junit_xml,
    pass_hat_k,
)
from huddle.evals.runner import Engine, ScenarioRunner
from huddle.evals.spec import (
    ApprovalTurn,
    CallExpectation,
    Expectations,
    Scenario,
    ScriptedModel,
    Simulator,
    ToolExpectation,
    load_scenario,
    load_scenarios,
    scenario_paths,
)

if TYPE_CHECKING:
    from huddle.config.settings import Settings
    from huddle.usage import UsageLedger

__all__ = [
    "ApprovalAsked",
    "ApprovalTurn",
    "CallExpectation",
    "Check",
    "Expectations",
    "IntentRecord",
    "Scenario",
    "ScenarioResult",
    "ScenarioRunner",
    "ScriptedModel",
    "Simulator",
    "SuiteResult",
    "ToolCallRecord",
    "ToolExpectation",
    "Trace",
    "TrialResult",
    "counts",
    "evaluate",
    "intent_in",
    "junit_xml",
    "load_scenario",
    "load_scenarios",
    "pass_hat_k",
    "run",
    "run_async",
    "scenario_paths",
    "tool_calls_in",
]


async def run_async(
    paths: Iterable[Path | str] | Sequence[Scenario],
    *,
    trials: int = 1,
    concurrency: int = 1,
    settings: Settings | None = None,
    model: str | None = None,
    record: Path | str | None = None,
    replay: Path | str | None = None,
    ledger: UsageLedger | None = None,
    on_trial: Callable[[TrialResult], None] | None = None,
    engine: Engine | None = None,
) -> SuiteResult:
    """`run` for code that already has an event loop."""
    from huddle.config.settings import load_settings
    from huddle.evals.cassette import Cassette

    if record is not None and replay is not None:
        raise ConfigError("give --record or --replay, not both")
    items = list(paths)
    given = [item for item in items if isinstance(item, Scenario)]
    scenarios = given if given and len(given) == len(items) else load_scenarios(items)  # type: ignore[arg-type]
    cassette = Cassette.record(Path(record)) if record else Cassette.replay(Path(replay)) if replay else None
    settings = settings or load_settings()
    runner = ScenarioRunner(
        settings,
        trials=trials,
        concurrency=concurrency,
        model=model,
        cassette=cassette,
        ledger=ledger,
        on_trial=on_trial,
        engine=engine or settings.engine,
    )
    try:
        return await runner.run(scenarios)
    finally:
        if cassette is not None:
            cassette.save()


def run(paths: Iterable[Path | str] | Sequence[Scenario], **options: Any) -> SuiteResult:
    """Run scenario files (or `Scenario` objects) and return the suite's result; usable from pytest::

        result = huddle.evals.scenarios.run(["examples/support"], trials=3)
        assert result.passed, [t.failures for s in result.scenarios for t in s.trials]

    Options: `trials`, `concurrency`, `settings` (default: `load_settings()`), `model` (a profile or rule file for
    every scenario), `record`/`replay` (a cassette path), `ledger`, `on_trial`, `engine` (``local`` or ``temporal``;
    default: the settings'). Invalid files raise `ConfigError`.
    """
    return asyncio.run(run_async(paths, **options))
