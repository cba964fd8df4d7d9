"""The group-chat manager: picks the next speaker through a chain of policies, cheapest first.

1. ``mention``    — the last message hands off to or @-mentions a member, when a member wrote it in its own words:
                    never the user's text, recalled memory, a plan, tool output or a failure (prompt injection
                    must not route around a plan's confirmation step).
2. ``rule``       — fixed rules: once the budget refused a call, the responder wraps up; a failed member's steps go
                    to its ``reroute_to`` alternate (an optional member is skipped, and any member that fails the
                    same way twice in a run is never picked again); a new task goes to the memory agent (recall)
                    and then the planner — or, when the planner failed, straight to the responder.
   ``direct``     — instead of the planner: the task needs no tool (`huddle.agents.tool_need`, rules and
                    embeddings, no model call), so the responder answers at once.
3. ``plan``       — the plan's next ready step names its assignee; a finished plan goes to the responder.
4. ``similarity`` — the member whose description is most similar to the last message (when an embedder is given).
5. ``llm``        — the manager's model chooses among the allowed candidates; an invalid name is ``repaired`` once
                    with feedback; then
6. ``fallback``   — a deterministic choice: the responder (which ends the run) or the next allowed member in roster
                    order. It never picks a forbidden speaker, so it cannot livelock (AutoGen #7471).

Past the budget's soft threshold, optional members are skipped (no longer candidates).
Only policies 4-6 are bound by ``allow_repeated_speaker``: the plan and rules may give one agent consecutive turns.
Every decision is recorded with its policy and reason; the manager's model calls are metered as agent ``manager``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import Literal, Protocol

from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, HandoffMessage, ToolCallSummaryMessage
from autogen_core.models import ChatCompletionClient, LLMMessage, SystemMessage, UserMessage
from pydantic import BaseModel

from huddle import effects, prompts, tracing
from huddle.agents.state import RunState
from huddle.secrets import redact
from huddle.usage.budget import Governor

# The group chat manager's policies, then the other kinds' (sequential, parallel, hierarchical, event-driven).
Policy = Literal[
    "mention",
    "rule",
    "direct",
    "plan",
    "similarity",
    "llm",
    "repaired",
    "fallback",
    "sequence",
    "fan_out",
    "aggregate",
    "delegate",
    "integrate",
    "event",
    "stop",
]
logger = logging.getLogger("huddle.manager")
_HISTORY_MESSAGES = 8
_HISTORY_CHARS = 300


class Decision(BaseModel):
    """Why an agent spoke: the turn, the speaker, the policy that chose it and a short reason."""

    turn: int
    speaker: str
    policy: Policy
    reason: str


class Similarity(Protocol):
    """Scores a text against each member's description (e.g. cosine similarity of embeddings)."""

    def __call__(self, text: str, descriptions: Mapping[str, str]) -> dict[str, float]: ...


class ToolNeed(Protocol):
    """Why a task needs a tool (a short reason), or None when it needs none and can be answered directly."""

    def __call__(self, task: str) -> str | None: ...


class Roles(BaseModel):
    """Which member plays which built-in role (None when the team has no such member)."""

    planner: str | None = None
    tool_executor: str | None = None
    memory: str | None = None
    responder: str


class Manager:
    """Chooses speakers: `select` names the next one from the conversation's thread (the `ManagedChat`'s selector)."""

    def __init__(
        self,
        roster: Mapping[str, str],
        roles: Roles,
        state: RunState,
        *,
        client: ChatCompletionClient | None = None,
        similarity: Similarity | None = None,
        similarity_threshold: float = 0.85,
        allow_repeated_speaker: bool = False,
        on_decision: Callable[[Decision], None] | None = None,
        governor: Governor | None = None,
        optional: Sequence[str] = (),
        reroutes: Mapping[str, str] | None = None,
        tool_need: ToolNeed | None = None,
    ) -> None:
        """`tool_need`: when given, a new task that needs no tool skips the planner (policy ``direct``)."""
        self.roster = dict(roster)
        self.roles = roles
        self.state = state
        self.client = client
        self.similarity = similarity
        self.similarity_threshold = similarity_threshold
        self.allow_repeated_speaker = allow_repeated_speaker
        self.skipped: set[str] = set()  # optional members removed from the candidates (the budget's hook)
        self.decisions: list[Decision] = []
        self.governor = governor
        self.optional = [name for name in optional if name in self.roster]
        self.reroutes = dict(reroutes or {})  # failed member -> the member that takes over its steps
        self.tool_need = tool_need
        self._failed_with: dict[str, set[str]] = {}  # member -> the reasons it failed with in this task
        self._on_decision = on_decision
        self._previous: str | None = None
        self._spoken: set[str] = set()
        self.model_error: str | None = None  # why this decision's model call failed, for its reason

    def start_task(self) -> None:
        """Forget per-task progress (a chat runs one task per user message on the same team)."""
        self.decisions.clear()
        self.skipped.clear()
        self._previous = None
        self._spoken.clear()
        self._failed_with.clear()

    @property
    def available(self) -> list[str]:
        return [name for name in self.roster if name not in self.skipped]

    async def select(self, thread: Sequence[BaseAgentEvent | BaseChatMessage]) -> str:
        """Choose the next speaker; always a member."""
        # The thread grows for a chat's whole life: look at its tail only, so a turn costs the same on the 500th task.
        last = next((m for m in reversed(thread) if isinstance(m, BaseChatMessage)), None)
        if last is not None and last.source in self.roster:
            self._spoken.add(last.source)
            self._previous = last.source
        self._economise()
        self.model_error = None
        choice = (
            self._by_budget()
            or self._after_failure(last)
            or self._by_mention(last)
            or await self._by_rule()
            or self._by_plan()
            or self._by_similarity(last)
            or await self._by_llm(thread)
            or self._fallback()
        )
        speaker, policy, reason = choice
        if self.model_error is not None:
            reason = f"{reason} (the manager's model failed: {self.model_error})"
        return self._decide(speaker, policy, reason)

    def _decide(self, speaker: str, policy: Policy, reason: str) -> str:
        decision = Decision(turn=len(self.decisions) + 1, speaker=speaker, policy=policy, reason=reason)
        self.decisions.append(decision)
        tracing.event(f"decision {speaker}", "decision", **decision.model_dump())
        if self._on_decision is not None:
            self._on_decision(decision)
        return speaker

    def _economise(self) -> None:
        """Past the budget's soft threshold, optional members stop being candidates (the governor's ``skip``)."""
        if self.governor is None or not self.governor.budget.active or self.governor.level() == "ok":
            return
        for name in self.optional:
            if name not in self.skipped:
                self.skipped.add(name)
                self.governor.record(name, "skip", f"budget past {self.governor.budget.soft_fraction:.0%}: optional")

    def _by_budget(self) -> tuple[str, Policy, str] | None:
        """Once the governor has refused a call, the responder wraps up with what the team has."""
        if self.governor is None or self.governor.stopped is None:
            return None
        self.state.stop_note = self.governor.stopped.reason
        return self.roles.responder, "rule", f"wrap up: {self.governor.stopped.reason}"

    def _after_failure(self, last: BaseChatMessage | None) -> tuple[str, Policy, str] | None:
        """A member failed: hand its steps to its alternate; an optional member is skipped; else the plan moves on."""
        if last is None or last.metadata.get("kind") != "failure":
            return None
        failed = last.source
        reason = last.metadata.get("error", "")
        seen = self._failed_with.setdefault(failed, set())
        if reason in seen:  # the same failure twice: asking again would only fail again (and loop to max_turns)
            self.skipped.add(failed)
        seen.add(reason)
        alternate = self.reroutes.get(failed)
        if alternate is not None and alternate in self.available and alternate != failed:
            moved = self.state.reassign(failed, alternate)
            steps = f" (steps {', '.join(map(str, moved))})" if moved else ""
            return alternate, "rule", f"{failed} failed: rerouted to {alternate}{steps}"
        if failed in self.optional:
            self.skipped.add(failed)
        return None

    def _candidates(self) -> list[str]:
        """Members the open-ended policies may pick: available, and not the previous speaker unless repeats allowed."""
        return [n for n in self.available if self.allow_repeated_speaker or n != self._previous]

    def _by_mention(self, last: BaseChatMessage | None) -> tuple[str, Policy, str] | None:
        if last is None or not self._trusted(last):
            return None
        if isinstance(last, HandoffMessage) and last.target in self.available:
            return last.target, "mention", f"{last.source} handed off to {last.target}"
        text = last.to_model_text()
        for name in self.available:
            if name != last.source and re.search(rf"(?<![\w@])@{re.escape(name)}\b", text):
                return name, "mention", f"{last.source} mentioned @{name}"
        return None

    def _trusted(self, message: BaseChatMessage) -> bool:
        """Whether a message may route the turn: a member's own words, not text it relays.

        The user's message, recalled memory, plans and intents (whose text quotes the user), tool output and failure
        messages (which quote exceptions) carry text nobody on the team wrote; an ``@orders`` in them is data, not a
        handoff. Members' plain messages carry no ``kind``; a message kind added later is untrusted until listed.
        """
        return (
            message.source in self.roster
            and not isinstance(message, ToolCallSummaryMessage)
            and "kind" not in message.metadata
        )

    async def _by_rule(self) -> tuple[str, Policy, str] | None:
        if self.state.plan is not None:
            return None
        memory, planner, responder = self.roles.memory, self.roles.planner, self.roles.responder
        if memory is not None and memory in self.available and memory not in self._spoken:
            return memory, "rule", "new task: recall shared memory before planning"
        if planner is None or planner not in self.roster:
            return None
        if planner in self.state.failures or planner not in self.available:
            return responder, "rule", f"{planner} is unavailable: the responder answers without a plan"
        if self.tool_need is None:
            return planner, "rule", "new task: the planner drafts a plan"
        need = await effects.offload(self.tool_need, self.state.task)  # may embed the task: off the event loop
        if need is None:
            return responder, "direct", "the task needs no tool: the responder answers without a plan"
        return planner, "rule", f"new task: the planner drafts a plan ({need})"

    def _by_plan(self) -> tuple[str, Policy, str] | None:
        if self.state.plan is None:
            return None
        for step in self.state.ready_steps():
            if step.assignee in self.available:
                return step.assignee, "plan", f"step {step.id} is ready: {step.instruction}"
            self.state.complete(step.id, f"skipped: {step.assignee} is not available", ok=False)
        if self.roles.responder in self.available and not self.state.ready_steps():
            return self.roles.responder, "plan", "all plan steps are finished"
        return None

    def _by_similarity(self, last: BaseChatMessage | None) -> tuple[str, Policy, str] | None:
        candidates = self._candidates()
        if self.similarity is None or last is None or not candidates:
            return None
        scores = self.similarity(last.to_model_text(), {n: self.roster[n] for n in candidates})
        best = max(scores, key=scores.__getitem__)
        if scores[best] < self.similarity_threshold:
            return None
        return best, "similarity", f"last message is closest to {best}'s description ({scores[best]:.2f})"

    async def _by_llm(self, thread: Sequence[BaseAgentEvent | BaseChatMessage]) -> tuple[str, Policy, str] | None:
        candidates = self._candidates()
        if self.client is None or not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0], "rule", "only one allowed candidate"
        recent = list(islice((m for m in reversed(thread) if isinstance(m, BaseChatMessage)), _HISTORY_MESSAGES))[::-1]
        history = "\n".join(f"{m.source}: {m.to_model_text()[:_HISTORY_CHARS]}" for m in recent)
        ask = prompts.render(
            "manager_select",
            roster="\n".join(f"- {n}: {self.roster[n]}" for n in candidates),
            history=history or "(empty)",
            candidates=", ".join(candidates),
        )
        conversation: list[LLMMessage] = [SystemMessage(content=ask)]
        reply = await self._ask(conversation)
        if (name := _exact_name(reply, candidates)) is not None:
            return name, "llm", "chosen by the manager's model"
        conversation += [
            UserMessage(
                content=prompts.render("manager_repair", reply=reply[:80], candidates=", ".join(candidates)),
                source="user",
            ),
        ]
        repaired = await self._ask(conversation)
        if (name := _exact_name(repaired, candidates)) is not None:
            return name, "repaired", f"model first answered {reply[:40]!r}, then {name!r} after feedback"
        return None

    async def _ask(self, conversation: list[LLMMessage]) -> str:
        """The model's reply, or "" when the call is refused or fails for good (the fallback then decides: choosing
        a speaker must never end the run)."""
        if self.client is None:
            return ""
        try:
            result = await self.client.create(conversation, extra_create_args={"max_tokens": 20})
        except Exception as exc:  # retries and fallback profiles are already spent inside the client
            why = redact(f"{type(exc).__name__}: {exc}")[:200]
            # INFO, not WARNING: the decision's reason carries it to --verbose and the trace; the user's screen gets the
            # run's own one error line if the run fails, not a second line per selection.
            logger.info("the manager's model call failed, the fallback chooses: %s", why)
            self.model_error = why
            return ""
        return result.content if isinstance(result.content, str) else ""

    def _fallback(self) -> tuple[str, Policy, str]:
        candidates = self._candidates()
        if self.roles.responder in candidates:
            return self.roles.responder, "fallback", "no policy chose a valid speaker: the responder answers"
        order = list(self.roster)
        start = order.index(self._previous) + 1 if self._previous in order else 0
        for name in order[start:] + order[:start]:
            if name in candidates:
                return name, "fallback", "no policy chose a valid speaker: next member in roster order"
        # Everything else is forbidden or skipped: only the previous speaker remains, so repeating it is the only move.
        return self.roles.responder, "fallback", "no other member is available"


def _exact_name(reply: str, candidates: Sequence[str]) -> str | None:
    """The candidate the reply names exactly (ignoring case, quotes and a trailing period), else None."""
    cleaned = reply.strip().strip("\"'`*.").strip().lower()
    return next((c for c in candidates if c.lower() == cleaned), None)
