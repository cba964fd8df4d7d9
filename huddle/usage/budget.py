"""Budgets that decide what runs: the governor consulted before every model call.

A `Budget` sets token and/or dollar limits per run, per session and per agent. Below the soft threshold (70% by
default) every call runs as is. Above it, the governor economises, cheapest loss of quality first, and records each
decision with its reason:

- ``trim``      — shrink the request: keep the system prompt, the first user message and the latest messages;
- ``downgrade`` — send the call to the profile's cheaper ``fallback`` profile;
- ``skip``      — an optional agent is taken out of the manager's candidates (see `huddle.teams.manager`);
- ``stop``      — refuse the call (`BudgetExhausted`); the team ends gracefully with the best partial answer.

Calls are refused once anything spent reaches its limit, and a call that would cross a hard limit is refused too,
except the responder's final answer: so a hard limit is exceeded by at most one call's overshoot.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from huddle import tracing
from huddle.errors import HuddleError
from huddle.usage import Totals, UsageLedger, current_scope

Action = Literal["trim", "downgrade", "skip", "stop"]
Level = Literal["ok", "soft", "hard"]


class Limit(BaseModel):
    """A cap in tokens, dollars, or both (whichever is reached first)."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(None, gt=0)
    max_usd: float | None = Field(None, gt=0)

    def fraction(self, spent: Totals, extra_tokens: int = 0, extra_usd: float = 0.0) -> float:
        """How much of this limit `spent` (plus a projected call) uses: 0.0 = nothing, 1.0 = all of it."""
        used = [0.0]
        if self.max_tokens:
            used.append((spent.total_tokens + extra_tokens) / self.max_tokens)
        if self.max_usd:
            used.append((spent.cost_usd + extra_usd) / self.max_usd)
        return max(used)


class Budget(BaseModel):
    """Limits per run, per session and per agent, and where economising starts (``budget:`` in huddle.yaml)."""

    model_config = ConfigDict(extra="forbid")

    run: Limit = Limit()
    session: Limit = Limit()
    agents: dict[str, Limit] = Field(default_factory=dict)
    soft_fraction: float = Field(0.7, gt=0, le=1)
    expected_completion_tokens: int = Field(256, gt=0, description="Used when a profile sets no max_tokens.")
    keep_last_messages: int = Field(2, ge=1, description="trim keeps the system prompt, the task and these.")

    @property
    def active(self) -> bool:
        return any(limit.max_tokens or limit.max_usd for limit in (self.run, self.session, *self.agents.values()))


class BudgetDecision(BaseModel):
    """One economising decision, as it appears in ``huddle run --json`` under ``budget.decisions``."""

    agent: str
    action: Action
    reason: str
    estimate_tokens: int = 0
    estimate_usd: float = 0.0


class BudgetExhausted(HuddleError):
    """The governor refused a model call; the caller should wrap up instead of failing."""

    def __init__(self, decision: BudgetDecision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


class Estimate(BaseModel):
    """A projected call: tokens in and out, and its price."""

    prompt_tokens: int
    completion_tokens: int
    usd: float

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Governor:
    """Applies a `Budget` against the ledger's actual spending; one per team (it reads the current run and session)."""

    def __init__(self, budget: Budget, ledger: UsageLedger, *, final_agent: str | None = None) -> None:
        self.budget = budget
        self.ledger = ledger
        self.final_agent = final_agent
        self.decisions: list[BudgetDecision] = []
        self.stopped: BudgetDecision | None = None
        self._lock = threading.Lock()
        # Estimates of calls admitted but not yet in the ledger, so concurrent calls cannot all pass one check.
        self._in_flight = Estimate(prompt_tokens=0, completion_tokens=0, usd=0.0)
        self._continues: str | None = None

    def start_run(self, continues: str | None = None) -> None:
        """A new run; `continues` names an earlier run this one goes on with (a paused run taken up again under an
        id of its own, e.g. a server's response id), whose spending counts against the run budget too."""
        self.decisions.clear()
        self.stopped = None
        self._continues = continues

    def _limits(self, agent: str | None) -> list[tuple[str, Limit, Totals]]:
        scope = current_scope()
        found = []
        if scope.run_id is not None:
            spent = self.ledger.totals(run_id=scope.run_id)
            if self._continues not in (None, scope.run_id):
                earlier = self.ledger.totals(run_id=self._continues)
                spent = spent.model_copy(
                    update={
                        "prompt_tokens": spent.prompt_tokens + earlier.prompt_tokens,
                        "completion_tokens": spent.completion_tokens + earlier.completion_tokens,
                        "cost_usd": spent.cost_usd + earlier.cost_usd,
                    }
                )
            found.append(("run", self.budget.run, spent))
        if scope.session_id is not None:
            found.append(("session", self.budget.session, self.ledger.totals(session_id=scope.session_id)))
        if agent is not None and agent in self.budget.agents:
            spent = self.ledger.totals(run_id=scope.run_id, agent=agent)
            found.append((f"agent {agent}", self.budget.agents[agent], spent))
        return [(name, limit, spent) for name, limit, spent in found if limit.max_tokens or limit.max_usd]

    def level(self, agent: str | None = None) -> Level:
        """Where spending stands: below the soft threshold, above it, or at a hard limit."""
        fractions = [limit.fraction(spent) for _, limit, spent in self._limits(agent)]
        worst = max(fractions, default=0.0)
        return "hard" if worst >= 1.0 else "soft" if worst >= self.budget.soft_fraction else "ok"

    def record(self, agent: str, action: Action, reason: str, estimate: Estimate | None = None) -> BudgetDecision:
        decision = BudgetDecision(
            agent=agent,
            action=action,
            reason=reason,
            estimate_tokens=estimate.tokens if estimate else 0,
            estimate_usd=estimate.usd if estimate else 0.0,
        )
        with self._lock:
            self.decisions.append(decision)
            if action == "stop" and self.stopped is None:
                self.stopped = decision
        self.ledger.record_budget_decision(decision.agent, decision.action, decision.reason)
        tracing.event(f"budget {action}", "budget", **decision.model_dump())
        return decision

    def over_soft(self, agent: str, estimate: Estimate) -> bool:
        """Whether this call would take any limit past the soft threshold (time to economise)."""
        tokens, usd = estimate.tokens + self._in_flight.tokens, estimate.usd + self._in_flight.usd
        return any(
            limit.fraction(spent, tokens, usd) > self.budget.soft_fraction for _, limit, spent in self._limits(agent)
        )

    def admit(self, agent: str, estimate: Estimate) -> str | None:
        """Reserve `estimate` for a call about to start, or say why it must not be made (then nothing is reserved).

        Refused: a limit is already spent, or the call (with the others in flight) would cross it — except the final
        answer's call, which may overshoot. Every admitted call must be followed by `release` once it is recorded.
        """
        with self._lock:
            refusal = self._refusal(agent, estimate)
            if refusal is None:
                self._in_flight = _add(self._in_flight, estimate, 1)
            return refusal

    def release(self, estimate: Estimate) -> None:
        with self._lock:
            self._in_flight = _add(self._in_flight, estimate, -1)

    def _refusal(self, agent: str, estimate: Estimate) -> str | None:
        tokens, usd = estimate.tokens + self._in_flight.tokens, estimate.usd + self._in_flight.usd
        for name, limit, spent in self._limits(agent):
            if limit.fraction(spent) >= 1.0:
                return f"budget exhausted: {name} limit {_describe(limit)} reached ({_spent(spent)} spent)"
            crossing = limit.fraction(spent, tokens, usd) > 1.0
            if crossing and agent != self.final_agent:
                return (
                    f"budget: the {agent} call (~{estimate.tokens} tokens, ${estimate.usd:.6f}) would exceed the "
                    f"{name} limit {_describe(limit)} ({_spent(spent)} spent); saving what is left for the answer"
                )
        return None

    def report(self) -> dict[str, object]:
        """Limits, what this run and session spent, and the decisions (for ``huddle run --json``)."""
        scope = current_scope()
        return {
            "limits": self.budget.model_dump(exclude_defaults=True),
            "spent_run": self.ledger.totals(run_id=scope.run_id).model_dump() if scope.run_id else None,
            "level": self.level(),
            "stopped": self.stopped.reason if self.stopped else None,
            "decisions": [d.model_dump() for d in self.decisions],
        }


def trim_messages(messages: Sequence[object], keep_last: int) -> list[object]:
    """The system prompt(s), the first user message and the last `keep_last` messages, in their original order."""
    from autogen_core.models import SystemMessage, UserMessage

    items = list(messages)
    keep = {i for i, m in enumerate(items) if isinstance(m, SystemMessage)}
    first_user = next((i for i, m in enumerate(items) if isinstance(m, UserMessage)), None)
    if first_user is not None:
        keep.add(first_user)
    keep.update(range(max(0, len(items) - keep_last), len(items)))
    return [m for i, m in enumerate(items) if i in keep]


def _add(total: Estimate, estimate: Estimate, sign: int) -> Estimate:
    return Estimate(
        prompt_tokens=total.prompt_tokens + sign * estimate.prompt_tokens,
        completion_tokens=total.completion_tokens + sign * estimate.completion_tokens,
        usd=total.usd + sign * estimate.usd,
    )


def _describe(limit: Limit) -> str:
    parts = []
    if limit.max_tokens:
        parts.append(f"{limit.max_tokens} tokens")
    if limit.max_usd:
        parts.append(f"${limit.max_usd:g}")
    return " / ".join(parts)


def _spent(spent: Totals) -> str:
    return f"{spent.total_tokens} tokens, ${spent.cost_usd:.6f}"
