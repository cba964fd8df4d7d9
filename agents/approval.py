"""Approvals: which tool calls wait for a person's yes, what a waiting call is, and what a person decided.

A call that needs approval is not run and nothing waits for it: the tool executor records a `PendingCall` in the run
state and the run ends with ``stop_reason="awaiting_approval"``. Everything here is plain JSON-able data, so a paused
run can be saved in a session and resumed by another process (or another surface: CLI, Python, later the server).

Whether a call asks is decided in this order: the team's Python hook (``approve(call, context)``: True runs it
without asking, False denies it, None defers), then the member's level for that tool (``approval:`` in the team
YAML, one level or a mapping tool -> level), else the default derived from the tool's ``side_effects``: ``external``
asks, ``write`` (inside the workspace) and ``read`` do not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from huddle import effects
from huddle.errors import HuddleError
from huddle.tools.definition import SideEffects

ApprovalLevel = Literal["never", "writes", "always"]
Action = Literal["approve", "deny", "edit"]
DecidedBy = Literal["cli", "python", "serve", "customer", "expired", "hook"]
AWAITING = "awaiting_approval"
"""The stop reason of a run that paused for approvals (not a failure: it has no answer yet)."""
DEFAULT_TIMEOUT_S = 86400.0


class PendingCall(BaseModel):
    """A tool call that waits for a person: what would run, who asked, for which plan step, and why it asks."""

    id: str
    tool: str
    args: dict[str, Any]
    agent: str
    step_id: int = Field(description="The plan step it belongs to; 0 for a call the plan did not make.")
    reason: str
    requested: float = Field(default_factory=effects.now, description="When it was asked (epoch seconds).")
    path: list[str] = Field(
        default_factory=list,
        description="The nested team members, outermost first, whose team asked ([] for the team's own member).",
    )


class ApprovalDecision(BaseModel):
    """What a person decided about one pending call: run it as asked, run it with edited arguments, or deny it (the
    reason is what the conversation gets as the tool's result)."""

    action: Action
    reason: str = ""
    args: dict[str, Any] | None = None
    by: DecidedBy = "python"

    @classmethod
    def approve(cls, *, by: DecidedBy = "python") -> ApprovalDecision:
        return cls(action="approve", by=by)

    @classmethod
    def deny(cls, reason: str = "denied by the user", *, by: DecidedBy = "python") -> ApprovalDecision:
        return cls(action="deny", reason=reason or "denied by the user", by=by)

    @classmethod
    def edit(cls, args: dict[str, Any], *, by: DecidedBy = "python") -> ApprovalDecision:
        return cls(action="edit", args=args, by=by)


class ApprovalRecord(BaseModel):
    """A request and its decision, kept in the run state (and so in the session) for the record: who, when."""

    call: PendingCall
    action: Action
    by: DecidedBy
    decided: float
    reason: str = ""


@dataclass
class ApprovalContext:
    """What an approval hook may look at besides the call: the task and the plan step's instruction."""

    task: str
    agent: str
    instruction: str


ApprovalHook = Callable[[PendingCall, ApprovalContext], bool | None]
Verdict = tuple[Literal["run", "ask", "deny"], str]


@dataclass
class ApprovalPolicy:
    """One member's rule for its tool calls: a level for all of them or per tool, and the team's hook."""

    level: ApprovalLevel | None = None
    per_tool: dict[str, ApprovalLevel] = field(default_factory=dict)
    hook: ApprovalHook | None = None

    @classmethod
    def of(
        cls, setting: ApprovalLevel | Mapping[str, ApprovalLevel] | None, hook: ApprovalHook | None
    ) -> ApprovalPolicy:
        """A member's ``approval:`` value (a level, or a mapping tool -> level) with the team's hook."""
        if isinstance(setting, Mapping):
            return cls(per_tool=dict(setting), hook=hook)
        return cls(level=setting, hook=hook)

    def judge(self, call: PendingCall, side_effects: SideEffects, context: ApprovalContext) -> Verdict:
        """Whether `call` runs, waits for a person, or is refused by the hook, and why."""
        if self.hook is not None:
            allowed = self.hook(call, context)
            if allowed is True:
                return "run", "allowed by the approval hook"
            if allowed is False:
                return "deny", "denied by the team's approval rule"
        level = self.per_tool.get(call.tool, self.level)
        if level is None:
            if side_effects == "external":
                return "ask", "it acts outside the workspace (side_effects: external)"
            return "run", "no approval needed"
        if level == "always":
            return "ask", f"approval: always for {call.tool}"
        if level == "writes" and side_effects != "read":
            return "ask", f"approval: writes, and {call.tool} has side_effects: {side_effects}"
        return "run", f"approval: {level}"


def pending_call(tool: str, args: Mapping[str, Any], agent: str, step_id: int, reason: str = "") -> PendingCall:
    """A new pending call with a fresh id."""
    return PendingCall(
        id=f"call_{effects.new_id()[:10]}", tool=tool, args=dict(args), agent=agent, step_id=step_id, reason=reason
    )


def settled(call: PendingCall, decision: ApprovalDecision, timeout_s: float, now: float) -> ApprovalDecision:
    """The decision that stands: a call that waited longer than `timeout_s` is denied ("expired") whatever was
    decided."""
    if now - call.requested > timeout_s:
        return ApprovalDecision.deny(f"expired: the approval waited more than {timeout_s:g} s", by="expired")
    return decision


def check_decisions(pending: list[PendingCall], decisions: Mapping[str, ApprovalDecision]) -> None:
    """Refuse decisions for calls that are not pending: one `HuddleError` line naming what is off. Deciding only
    some of the pending calls is allowed: the run stays paused, nothing runs, until every one is decided."""
    if not pending:
        raise HuddleError("nothing is waiting for approval")
    ids = [p.id for p in pending]
    unknown = sorted(set(decisions) - set(ids))
    if unknown:
        raise HuddleError(f"no pending call {unknown[0]!r} (pending: {', '.join(ids)})")


Checkpoint = Callable[[], Awaitable[None]]
_checkpoint: ContextVar[Checkpoint | None] = ContextVar("huddle_approval_checkpoint", default=None)


def checkpointing(save: Checkpoint | None) -> None:
    """Make `save` the way the current run (its own task, and the nested teams' tasks it starts) keeps its decisions
    and which approved calls have run, before and after each one runs (a durable session's; None: not kept)."""
    _checkpoint.set(save)


async def checkpoint() -> None:
    """Keep the run's approvals now, so a process killed from here on never runs an approved call twice."""
    save = _checkpoint.get()
    if save is not None:
        await save()


@runtime_checkable
class ReplyDecider(Protocol):
    """A member that reads a customer's answer to a paused turn as the decision: in a support chat the customer, not
    an operator, decides, so their "yes" or "no" is it (the support shop's router, `examples/support`)."""

    def approval_reply(self, text: str, pending: Sequence[PendingCall]) -> Mapping[str, ApprovalDecision] | None:
        """The decisions `text` gives the `pending` calls; None when it is no answer to them (a new message)."""
        ...

    def approval_question(self, pending: Sequence[PendingCall]) -> str:
        """What the customer is asked while the calls wait."""
        ...


def reply_decider(uses: Iterable[str]) -> ReplyDecider | None:
    """The first custom member class among `uses` (members' ``use:`` targets) that answers paused turns for the
    customer, if any."""
    from huddle.tools.plugins import AGENTS_GROUP, resolve

    for use in uses:
        target = resolve(use, AGENTS_GROUP, where=f"agent {use!r}")
        if isinstance(target, ReplyDecider):
            return target
    return None
