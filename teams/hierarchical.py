"""Hierarchical (manager → workers): a manager model agent splits the task into sub-tasks, hands each to the worker
best suited for it, and writes the answer from their results.

The workers are the ``agents:`` — usually whole teams (``team: billing.yaml``), described to the manager by their
``description``. The delegation is one structured-output call (`Delegation`, bounded like the planner's `Plan`),
sanitised against the roster: unknown workers are dropped, and an unusable reply falls back to giving every worker
the whole task, so a weak model never stalls the run. Different workers work concurrently (independent sub-tasks are
what delegation is for); one worker's sub-tasks run in order, because a team keeps one conversation. A failed worker
is reported to the manager, which answers with the rest (``stop_reason`` starts with ``partial``).

A worker team that pauses for approvals pauses the run (`PatternTeam`): the delegation and the finished sub-tasks'
outputs are kept, so the resume asks the manager nothing again, takes the paused worker up where it stopped, then
runs that worker's later sub-tasks and the manager's answer.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from autogen_agentchat.messages import TextMessage
from pydantic import BaseModel, Field, ValidationError

from huddle.models.structured import structured_output_args
from huddle.teams.base import MemberError, Outcome, Run
from huddle.teams.patterns import Member, ModelMember, PatternTeam, failure_note, reply_text

DELEGATE_PROMPT = """{persona}

You manage a team of workers. Split the user's task into sub-tasks and give each one to the worker best suited for it;
give a worker nothing it is not for. A worker sees only its own sub-task, so make each one complete on its own.

Workers:
{roster}

Reply with JSON only: {{"assignments": [{{"worker": "<a worker's name>", "task": "<its sub-task>"}}]}}, at most
{max_assignments} assignments."""

INTEGRATE_PROMPT = """{persona}

Your workers have done their sub-tasks. Write the answer to the user's task from their results. If a worker failed,
answer with what you have and say what is missing."""


class Assignment(BaseModel):
    """One sub-task for one worker."""

    worker: str = Field(max_length=40, description="The worker's name, exactly as listed.")
    task: str = Field(max_length=1000, description="The sub-task, complete on its own.")


class Delegation(BaseModel):
    """The manager's split of the task."""

    assignments: list[Assignment] = Field(max_length=32)


WorkResult = tuple[str, str, str | None]  # worker, sub-task, output (None: failed)


class HierarchicalTeam(PatternTeam):
    """A manager delegating to worker members; see the module docstring."""

    kind: ClassVar[str] = "hierarchical"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert self.spec.manager is not None  # PatternSpec requires one for this kind
        manager = self.build_member(self.spec.manager)
        assert isinstance(manager, ModelMember)  # PatternSpec requires a model agent
        self.manager = manager
        self.delegation: list[Assignment] | None = None  # this run's, kept while it waits for approvals

    async def orchestrate(self, run: Run) -> Outcome:
        self.delegation = None
        return await super().orchestrate(run)

    async def save_state(self) -> dict[str, Any]:
        state = await super().save_state()
        if self.delegation is not None:
            state["delegation"] = [a.model_dump() for a in self.delegation]
        return state

    async def load_state(self, state: dict[str, Any]) -> None:
        await super().load_state(state)
        saved = state.get("delegation")
        self.delegation = None if saved is None else [Assignment.model_validate(a) for a in saved]

    @property
    def responder(self) -> str:
        assert self.spec.manager is not None
        return self.spec.manager.name

    def all_members(self) -> list[Member]:
        return [self.manager, *super().all_members()]

    async def flow(self, run: Run) -> Outcome:
        if self.delegation is None:
            try:
                self.delegation = await self._delegate(run)
            except MemberError as error:
                run.fail(error)
                return Outcome(
                    "", f"{'budget' if error.budget else 'failed'}: the manager could not delegate: {error.reason}"
                )
        by_worker: dict[str, list[tuple[int, str]]] = {}
        for index, assignment in enumerate(self.delegation):
            by_worker.setdefault(assignment.worker, []).append((index, assignment.task))
        done = await asyncio.gather(*(self._work(worker, tasks, run) for worker, tasks in by_worker.items()))
        if (waiting := self.paused(run)) is not None:
            return waiting
        results = [result for worker_results in done for result in worker_results]
        if results and all(output is None for _, _, output in results):
            return Outcome("", f"error: every worker failed; {failure_note(run.failures)}")
        answer = await self._integrate(results, run)
        if run.failures:
            return Outcome(answer, f"partial: {failure_note(run.failures)}")
        return Outcome(answer, f"finished: {len(results)} sub-tasks by {len(by_worker)} workers")

    async def _delegate(self, run: Run) -> list[Assignment]:
        """The manager's assignments, sanitised; every worker gets the whole task when the reply is unusable."""
        roster = "\n".join(f"- {m.name}: {m.spec.member_description}" for m in self.members.values())
        limit = self.spec.team.max_assignments
        system = DELEGATE_PROMPT.format(persona=self.manager.instruction, roster=roster, max_assignments=limit)
        args = structured_output_args(self.manager.client, Delegation)
        result = await self.manager.guard(self.manager.complete(system, f"Task: {run.task}", run, **args))
        try:
            proposed = Delegation.model_validate_json(reply_text(result)).assignments
            note = ""
        except ValidationError:
            proposed, note = [], "the manager's reply was not a usable delegation"
        assignments = [a for a in proposed if a.worker in self.members and a.task.strip()][:limit]
        if len(assignments) < len(proposed):
            unknown = sorted({a.worker for a in proposed if a.worker not in self.members})
            note = f"dropped {len(proposed) - len(assignments)} assignments" + (
                f" to unknown workers {', '.join(unknown)}" if unknown else ""
            )
        if not assignments and note:  # unusable, or only unknown workers (an empty list: the manager answers)
            assignments = [Assignment(worker=name, task=run.task) for name in self.members]
            note = f"{note or 'no assignments'}: every worker gets the whole task"
        lines = [f"- {a.worker}: {a.task}" for a in assignments] or ["(no sub-tasks: answering directly)"]
        content = "Delegated:\n" + "\n".join(lines) + (f"\n({note})" if note else "")
        run.emit(
            TextMessage(content=content, source=self.manager.name, models_usage=result.usage, metadata={"kind": "plan"})
        )
        for assignment in assignments:
            run.decide(assignment.worker, "delegate", assignment.task[:200])
        return assignments

    async def _work(self, worker: str, tasks: list[tuple[int, str]], run: Run) -> list[WorkResult]:
        """The worker's sub-tasks in order (those done before a pause reused); it stops at one that pauses."""
        member, results = self.members[worker], []
        for index, task in tasks:
            key = str(index)  # the sub-task's place in the delegation
            if key not in self.progress:
                output = await self.attempt(member, task, run)
                if any(p.path[:1] == [worker] for p in self.state.pending):
                    break  # its later sub-tasks wait for the resume (they would reset the paused conversation)
                self.progress[key] = output
            results.append((worker, task, self.progress[key]))
        return results

    async def _integrate(self, results: list[WorkResult], run: Run) -> str:
        """The manager's answer from the results; the results themselves if that call fails."""
        sections = [
            f"## {worker} (sub-task: {task})\n"
            + (output.strip() if output is not None else f"(failed: {run.failures.get(worker, 'unknown')})")
            for worker, task, output in results
        ]
        user = f"Task: {run.task}\n\nYour workers' results:\n\n" + "\n\n".join(sections or ["(none)"])
        run.decide(self.manager.name, "integrate", f"writes the answer from {len(results)} results")
        system = INTEGRATE_PROMPT.format(persona=self.manager.instruction)
        try:
            result = await self.manager.guard(self.manager.complete(system, user, run))
        except MemberError as error:
            run.fail(error)
            answer, usage = "\n\n".join(sections), None
        else:
            answer, usage = reply_text(result), result.usage
        run.emit(TextMessage(content=answer, source=self.manager.name, models_usage=usage))
        return answer
