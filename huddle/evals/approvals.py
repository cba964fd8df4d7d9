"""Approvals in a scenario: a user turn that decides the waiting calls, and a customer's own answer read as one.

A turn that ends with tool calls waiting for approval (`huddle.agents.approval`) has no answer yet. The scenario's
next user turn takes it up in one of two ways:

* an approval turn (``approve: issue_refund``, ``approve: all``, ``deny: {tool, reason}``), which a person at a
  console would give; every waiting call must be named (or ``all``), so a scenario never approves by accident;
* a plain message, when a member of the team answers for the customer: in a support chat the customer, not an
  operator, decides, so their "yes" or "no" is the decision. A member class (its ``use:`` target) that has
  ``approval_reply(text, pending)`` maps the message to decisions (None: it is not an answer, so it is a new message
  and the waiting calls are dropped) and ``approval_question(pending)`` says what the customer is asked meanwhile.
  The support shop's router does (``examples/support/support_shop/router.py``); `huddle.agents.approval.
  ReplyDecider` is the protocol, and a durable session (``huddle chat``, ``huddle serve``) reads a customer's
  answer the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from huddle.agents.approval import ApprovalDecision, PendingCall, ReplyDecider
from huddle.errors import HuddleError
from huddle.evals.spec import ALL, ApprovalTurn


def decisions_for(turn: ApprovalTurn, pending: Sequence[PendingCall], index: int) -> dict[str, ApprovalDecision]:
    """The decisions an approval turn (the scenario's user turn `index`, from 0) gives the waiting calls; one
    `HuddleError` naming the turn when nothing waits, the tool does not, or a waiting call is left undecided."""
    where = f"user turn {index + 1} ({turn.describe()})"
    if not pending:
        raise HuddleError(f"{where}: nothing waits for approval")
    waiting = ", ".join(p.tool for p in pending)
    named = [p for p in pending if turn.tool in (ALL, p.tool)]
    if not named:
        raise HuddleError(f"{where}: no {turn.tool} call waits for approval (waiting: {waiting})")
    if len(named) < len(pending):
        raise HuddleError(f"{where}: decide every waiting call, or use `approve: all` (waiting: {waiting})")
    if turn.deny is not None:
        return {p.id: ApprovalDecision.deny(turn.deny.reason) for p in named}
    return {p.id: ApprovalDecision.approve() for p in named}


def waiting_text(pending: Sequence[PendingCall], decider: ReplyDecider | None) -> str:
    """What the customer is told while calls wait: the member's question, else the calls themselves."""
    if decider is not None:
        return decider.approval_question(pending)
    calls = "; ".join(f"{p.tool}({', '.join(f'{k}={v!r}' for k, v in p.args.items())})" for p in pending)
    return f"Waiting for approval: {calls}"
