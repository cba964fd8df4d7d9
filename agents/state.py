"""What one run of a team knows beyond the message thread: the task, the plan and how far each step has got.

The planner writes the plan, the tool executor and memory agent complete their steps, and the manager reads it to
pick the next speaker without a model call. One `RunState` per run; nothing here is global.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from huddle.agents.approval import ApprovalDecision, ApprovalRecord, PendingCall
from huddle.agents.plan import Plan, PlanStep, StepStatus
from huddle.tools import ToolResult


@dataclass
class RunState:
    """The task, the current plan and the status and result of each of its steps."""

    task: str = ""
    run_id: str | None = None
    plan: Plan | None = None
    status: dict[int, StepStatus] = field(default_factory=dict)
    results: dict[int, str] = field(default_factory=dict)
    stop_note: str | None = None  # why the run is wrapping up early (the budget), for the responder to say
    session_scope: str | None = None  # memory scope of the chat session (its episodic answers), if any
    failures: dict[str, str] = field(default_factory=dict)  # member -> why it failed, in this task
    stream_answer: bool = True  # whether anyone reads the answer as it is written (else one plain call is cheaper)
    pending: list[PendingCall] = field(default_factory=list)  # calls waiting for a person's approval
    approvals: list[ApprovalRecord] = field(default_factory=list)  # this task's requests and their decisions
    decided: dict[str, ApprovalDecision] = field(default_factory=dict)  # call id -> the decision that stands
    # call id -> its result once settled; None while an approved call runs (a crash then: it is never run again)
    ran: dict[str, ToolResult | None] = field(default_factory=dict)

    def start(self, task: str, run_id: str | None, *, stream_answer: bool = True) -> None:
        """Begin a new task (a chat keeps its team and history across tasks, but not the plan)."""
        self.task, self.run_id, self.plan, self.stop_note = task, run_id, None, None
        self.stream_answer = stream_answer
        self.status.clear()
        self.results.clear()
        self.failures.clear()
        self.pending.clear()
        self.approvals.clear()
        self.decided.clear()
        self.ran.clear()

    @property
    def waiting(self) -> list[PendingCall]:
        """The pending calls nobody has decided yet (the run stays paused while there are any)."""
        return [p for p in self.pending if p.id not in self.decided]

    def snapshot(self) -> dict[str, Any]:
        """The run as JSON-able data, for a session to keep while the run waits for approvals."""
        return {
            "task": self.task,
            "run_id": self.run_id,
            "plan": self.plan.model_dump() if self.plan else None,
            "status": {str(k): v for k, v in self.status.items()},
            "results": {str(k): v for k, v in self.results.items()},
            "stop_note": self.stop_note,
            "failures": dict(self.failures),
            "pending": [p.model_dump() for p in self.pending],
            "approvals": [a.model_dump() for a in self.approvals],
            "decided": {k: d.model_dump() for k, d in self.decided.items()},
            "ran": {k: None if r is None else r.model_dump() for k, r in self.ran.items()},
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Take up a run `snapshot` saved (in this process or another)."""
        self.task, self.run_id, self.stop_note = saved["task"], saved["run_id"], saved.get("stop_note")
        self.plan = Plan.model_validate(saved["plan"]) if saved.get("plan") else None
        self.status = {int(k): v for k, v in saved.get("status", {}).items()}
        self.results = {int(k): v for k, v in saved.get("results", {}).items()}
        self.failures = dict(saved.get("failures", {}))
        self.pending = [PendingCall.model_validate(p) for p in saved.get("pending", [])]
        self.approvals = [ApprovalRecord.model_validate(a) for a in saved.get("approvals", [])]
        self.decided = {k: ApprovalDecision.model_validate(d) for k, d in saved.get("decided", {}).items()}
        self.ran = {k: None if r is None else ToolResult.model_validate(r) for k, r in saved.get("ran", {}).items()}

    def set_plan(self, plan: Plan) -> None:
        self.plan = plan
        self.status = {step.id: "pending" for step in plan.steps}
        self.results.clear()

    def ready_steps(self) -> list[PlanStep]:
        """Pending steps whose dependencies have finished (done or failed), in plan order."""
        if self.plan is None:
            return []
        return [
            step
            for step in self.plan.steps
            if self.status.get(step.id) == "pending" and all(self.status.get(d) != "pending" for d in step.depends_on)
        ]

    def ready_for(self, agent: str) -> list[PlanStep]:
        return [step for step in self.ready_steps() if step.assignee == agent]

    def reassign(self, failed: str, alternate: str) -> list[int]:
        """Give `failed`'s failed steps to `alternate` and make them pending again; returns their ids."""
        if self.plan is None:
            return []
        moved = [s.id for s in self.plan.steps if s.assignee == failed and self.status.get(s.id) == "failed"]
        self.plan = self.plan.model_copy(
            update={
                "steps": [s.model_copy(update={"assignee": alternate}) if s.id in moved else s for s in self.plan.steps]
            }
        )
        for step_id in moved:
            self.status[step_id] = "pending"
            self.results.pop(step_id, None)
        return moved

    def complete(self, step_id: int, result: str, *, ok: bool = True) -> None:
        self.status[step_id] = "done" if ok else "failed"
        self.results[step_id] = result
