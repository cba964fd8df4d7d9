"""Parallel execution (A, B, C → aggregator): the same input fans out to every member at once, then one result.

Members run concurrently (one asyncio task each, so the run takes about as long as the slowest member, not the sum),
each within its timeout (``timeout_s``, else ``team.member_timeout_s``). Their outputs are combined by the
``aggregator`` member (sent every output under its member's name, and which members failed), or without one by
``team.merge``: ``concat`` (sections in member order) or a ``module:function`` taking ``{member: output}``.

A member that raises or times out does not fail the run: the others' outputs are still combined, the result's
``failures`` names it with the reason, and ``stop_reason`` starts with ``partial``. Only when every member fails is
there no answer.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from autogen_agentchat.messages import TextMessage

from huddle.agents.guard import failure_reason
from huddle.teams.base import MemberError, Outcome, Run
from huddle.teams.patterns import Member, PatternTeam, failure_note
from huddle.tools.plugins import resolve

MERGE_GROUP = "huddle.merges"  # entry points naming merge functions, like huddle.tools names tools


class ParallelTeam(PatternTeam):
    """A fan-out to every member and a fan-in by an aggregator or a merge function; see the module docstring."""

    kind: ClassVar[str] = "parallel"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        aggregator = self.spec.aggregator
        self.aggregator = self.build_member(aggregator) if aggregator is not None else None
        merge = self.spec.team.merge
        self._merge: Callable[[dict[str, str]], Any] | None = (
            None if merge == "concat" else resolve(merge, MERGE_GROUP, where=f"team {self.spec.team.name!r}: merge")
        )

    @property
    def responder(self) -> str:
        return self.spec.aggregator.name if self.spec.aggregator else self.spec.team.name

    def all_members(self) -> list[Member]:
        return super().all_members() + ([self.aggregator] if self.aggregator else [])

    async def flow(self, run: Run) -> Outcome:
        members = list(self.members.values())
        todo = [m for m in members if m.name not in self.progress]  # all of them, unless resumed after a pause
        for member in todo:
            run.decide(member.name, "fan_out", f"one of {len(members)} members run concurrently on the task")
        outputs = await asyncio.gather(*(self.attempt(m, run.task, run) for m in todo))
        paused = {p.path[0] for p in self.state.pending}
        self.progress.update({m.name: out for m, out in zip(todo, outputs, strict=True) if m.name not in paused})
        if (waiting := self.paused(run)) is not None:
            return waiting
        done = {m.name: out for m in members if (out := self.progress.get(m.name)) is not None}
        if not done:
            return Outcome("", f"error: every member failed; {failure_note(run.failures)}")
        answer = await self._combine(done, run)
        if (waiting := self.paused(run)) is not None:  # the aggregator is a nested team that paused
            return waiting
        if run.failures:
            note = failure_note(run.failures)
            return Outcome(answer, f"partial: {len(done)} of {len(members)} members answered; {note}")
        return Outcome(answer, f"finished: {len(members)} members answered")

    async def _combine(self, outputs: dict[str, str], run: Run) -> str:
        """The aggregator's or the merge function's answer; the concatenation if that fails too."""
        failed = dict(run.failures)
        if self.aggregator is not None:
            run.decide(self.aggregator.name, "aggregate", f"combines {len(outputs)} outputs")
            answer = await self.attempt(self.aggregator, concat(outputs, failed), run)
            if answer is not None or self.state.pending:
                return answer or ""
        elif self._merge is not None:
            try:
                merged = self._merge(dict(outputs))
                return str(await merged if inspect.isawaitable(merged) else merged)
            except Exception as exc:
                run.fail(MemberError("merge", failure_reason(exc)))
        answer = concat(outputs, failed)
        run.emit(TextMessage(content=answer, source=self.responder))
        return answer


def concat(outputs: Mapping[str, str], failed: Mapping[str, str]) -> str:
    """Each output under its member's name, then the members that failed, so a reader sees what is missing."""
    sections = [f"## {name}\n{text.strip()}" for name, text in outputs.items()]
    sections += [f"## {name}\n(failed: {reason})" for name, reason in failed.items()]
    return "\n\n".join(sections)
