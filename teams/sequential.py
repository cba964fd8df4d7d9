"""Sequential flow (A → B → C): the members run in a fixed order, each one's output is the next one's input.

The first member gets the task; the last one's output is the answer. A member's ``input`` template can also show it the
original task (``"Request: {task}\\n\\nDraft: {input}"``). When a member fails, an ``optional`` one is skipped (its
input goes on to the next member); otherwise the run has no answer (``error: step 2 (b) failed: ...``): an earlier
step's output is a draft, not what the pipeline was asked for, and it stays in the run's messages. A budget stop is a
decision rather than a fault, so it answers with the last output it got (``budget: step 2 (b) ...``).
"""

from __future__ import annotations

from typing import ClassVar

from huddle.agents.approval import AWAITING
from huddle.teams.base import MemberError, Outcome, Run
from huddle.teams.patterns import MemberPaused, PatternTeam


class SequentialTeam(PatternTeam):
    """A pipeline of members; see the module docstring."""

    kind: ClassVar[str] = "sequential"

    @property
    def responder(self) -> str:
        return self.spec.agents[-1].name

    async def flow(self, run: Run) -> Outcome:
        text, produced = run.task, False
        steps = list(self.members.values())
        previous = "the task"
        for i, member in enumerate(steps, start=1):
            if member.name in self.progress:  # done before the run paused for approvals: not redone
                done = self.progress[member.name]
                text, produced = (text, produced) if done is None else (done, True)
                continue
            run.decide(member.name, "sequence", f"step {i} of {len(steps)}, given {previous}")
            try:
                text, produced = await self.call(member, text, run), True
                self.progress[member.name] = text
            except MemberPaused:
                return self.paused(run) or Outcome("", AWAITING)
            except MemberError as error:
                run.fail(error)
                if member.spec.optional:
                    self.progress[member.name] = None
                    continue
                if error.budget:
                    return Outcome(text if produced else "", f"budget: step {i} ({member.name}) {error.reason}")
                return Outcome("", f"error: step {i} ({member.name}) failed: {error.reason}")
            previous = f"{member.name}'s output"
        skipped = f" ({len(run.failures)} optional skipped)" if run.failures else ""
        return Outcome(text, f"finished: {len(steps)} steps{skipped}")
