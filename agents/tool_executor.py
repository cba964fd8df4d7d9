"""The tool executor: runs the plan's tool steps, without a model call whenever the plan already has valid arguments.

Only a step whose tool or arguments the planner could not give costs a model call (a tool call chosen by the model
among this agent's tools). Every failure — unknown tool, invalid arguments, an exception, a timeout, a model that
does not call a tool, a model call that fails for good — becomes a result line in the conversation and a failed step
of its own; the other steps keep their results, and a step that finished is never run again (a write must not repeat
when the failed steps are rerouted). In a team with a planner, tools that change things (``write``, ``external``) run
only as plan steps: a request routed here by a mention or the manager's model may only read, so text injected into
the conversation cannot skip the plan's confirmation. What it posts is bounded: one argument cannot fill the next
prompt.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, LLMMessage, RequestUsage, SystemMessage, UserMessage

from huddle import effects, prompts, tracing
from huddle.agents.approval import (
    ApprovalContext,
    ApprovalDecision,
    ApprovalPolicy,
    ApprovalRecord,
    PendingCall,
    checkpoint,
    pending_call,
)
from huddle.agents.plan import PlanStep
from huddle.agents.state import RunState
from huddle.secrets import redact
from huddle.tools import ToolRegistry, ToolResult
from huddle.tools.results import ToolArgumentsError
from huddle.usage.budget import BudgetExhausted

logger = logging.getLogger("huddle.tools")
MAX_ARG_CHARS = 200
"""An argument's value as posted to the conversation (the tool itself gets all of it)."""
MAX_RESULT_CHARS = 8000
"""A step's result or error as posted: tools bound their own output in tokens; this bounds everything else too."""
WAITING = "waiting for a person's approval"
"""How the result of a call that waits for approval begins (it did not run)."""


class ToolExecutorAgent(BaseChatAgent):
    """Runs every ready plan step assigned to it, concurrently, and reports one line per step."""

    def __init__(
        self,
        name: str,
        description: str,
        client: ChatCompletionClient,
        state: RunState,
        *,
        tools: ToolRegistry,
        prompt: str = "tool_executor",
        planned_writes_only: bool = False,
        approval: ApprovalPolicy | None = None,
    ) -> None:
        """`planned_writes_only`: the team has a planner, so ``write``/``external`` tools run only as its steps.
        `approval`: which calls wait for a person (`huddle.agents.approval`); by default only ``external`` ones."""
        super().__init__(name, description)
        self._client = client
        self._state = state
        self._tools = tools
        self._prompt = prompt
        self._planned_writes_only = planned_writes_only
        self._approval = approval or ApprovalPolicy()

    @property
    def tools(self) -> ToolRegistry:
        return self._tools

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        steps = self._state.ready_for(self.name)
        if not steps:
            instruction = messages[-1].to_model_text() if messages else self._state.task
            # Chosen by mention, similarity or the manager's model rather than the plan: an unplanned step 0.
            steps = [PlanStep.model_construct(id=0, assignee=self.name, instruction=instruction, tool=None, args=None)]
        outcomes = await asyncio.gather(*(self._settle(step, cancellation_token) for step in steps))
        return Response(chat_message=self.report(steps, outcomes))

    def report(self, steps: Sequence[PlanStep], outcomes: Sequence[tuple[ToolResult, RequestUsage]]) -> TextMessage:
        """The one message that posts these steps' results (also the results of approved or denied calls)."""
        lines, usage = [], RequestUsage(prompt_tokens=0, completion_tokens=0)
        for step, (result, step_usage) in zip(steps, outcomes, strict=True):
            call = f"{clip(result.tool)}({', '.join(f'{k}={clip(repr(v))}' for k, v in result.args.items())})"
            label = f"Step {step.id}" if step.id else "Request"
            lines.append(f"{label}: {call} -> {'' if result.ok else 'ERROR '}{clip(result.content, MAX_RESULT_CHARS)}")
            usage = _add_usage(usage, step_usage)
        return TextMessage(
            content="\n".join(lines),
            source=self.name,
            models_usage=usage if usage.prompt_tokens or usage.completion_tokens else None,
            metadata={
                "kind": "tool_result",
                "model_calls": str(sum(1 for _, u in outcomes if u.prompt_tokens)),
                # The calls as data, for checks that must not parse the text (scenario expectations).
                "calls": json.dumps(
                    [{"tool": clip(r.tool), "args": _clipped(r.args), "ok": r.ok} for r, _ in outcomes]
                ),
                # What the responder reads: one plain sentence per result (a small model copies a sentence
                # correctly and misreads a JSON object, e.g. the clock's weekday).
                # A call waiting for approval has no result yet: once decided, its real one is reported.
                "findings": "\n".join(plain_result(r) for r, _ in outcomes if not waiting(r)),
            },
        )

    async def _settle(self, step: PlanStep, cancellation_token: CancellationToken) -> tuple[ToolResult, RequestUsage]:
        """One step's outcome, whatever happens to its siblings: an exception is this step's failure, and the step
        is completed in the run state as soon as it ends, so a finished step is never handed to anyone again."""
        try:
            outcome = await self._run_step(step, cancellation_token)
        except Exception as exc:  # the model call failed for good (its retries and fallbacks are spent)
            why = redact(f"{type(exc).__name__}: {exc}")[:MAX_RESULT_CHARS]
            logger.warning("%s: step %d failed: %s", self.name, step.id, why)
            outcome = _not_run(step.tool, why), RequestUsage(prompt_tokens=0, completion_tokens=0)
        if step.id and not any(p.step_id == step.id for p in self._state.pending):
            self._state.complete(step.id, outcome[0].content, ok=outcome[0].ok)
        return outcome

    async def _run_step(self, step: PlanStep, cancellation_token: CancellationToken) -> tuple[ToolResult, RequestUsage]:
        """Run the step's tool directly when the plan gave valid arguments; otherwise let the model choose the call."""
        args = step.arguments()
        none = RequestUsage(prompt_tokens=0, completion_tokens=0)
        if step.tool in self._tools.names() and args is not None:
            return await self._call(step, step.tool, args), none
        if not self._client.model_info["function_calling"]:
            return _not_run(step.tool, "the step gives no valid tool call and this model cannot call tools"), none
        tools = self._offered(step)
        # The step goes in the user message only: the system prompt stays the same for every step of the run (a
        # provider's prompt cache reads it), and it said the step twice.
        system = prompts.render(self._prompt, name=self.name, task=self._state.task)
        conversation: list[LLMMessage] = [
            SystemMessage(content=system),
            UserMessage(content=step.instruction, source="user"),
        ]
        usage = none
        for attempt in range(2):  # a malformed tool call is re-asked once, with the parse error as feedback
            try:
                result = await self._client.create(
                    conversation, tools=tools.schemas(), cancellation_token=cancellation_token
                )
            except BudgetExhausted as exc:
                return _not_run(step.tool, str(exc)), usage
            usage = _add_usage(usage, result.usage)
            if isinstance(result.content, str) or not result.content:
                return _not_run(step.tool, "the model did not call a tool"), usage
            call = result.content[0]
            problem = _unparsable(call.arguments)
            if problem is None or attempt == 1:
                break
            conversation.append(
                UserMessage(content=prompts.render("tool_call_repair", tool=call.name, problem=problem), source="user")
            )
        name = clip(call.name)
        if call.name in self._tools.names() and call.name not in tools.names():
            logger.warning("%s refused tool %r on an unplanned request: it has side effects", self.name, name)
            return _not_run(
                call.name, f"tool {name!r} changes things: it runs only as a step of the team's plan"
            ), usage
        if call.name not in tools.names():
            allowed = ", ".join(tools.names())
            logger.warning("%s refused tool %r: not on its allowlist (%s)", self.name, name, allowed)
            return _not_run(name, f"tool {name!r} is not on {self.name}'s allowlist ({allowed})"), usage
        return await self._call(step, call.name, call.arguments), usage

    async def _call(self, step: PlanStep, name: str, args: dict[str, Any] | str) -> ToolResult:
        """Run the call unless it must wait for a person (then it is recorded in the run state as pending, and the
        run ends after this turn) or the team's approval hook refuses it."""
        tool = self._tools.get(name)
        try:
            valid = tool.validate(args).model_dump(mode="json")
        except ToolArgumentsError:
            return await tool.run(args)  # the call fails as it is, with the error the model can act on
        pending = pending_call(name, valid, self.name, step.id)
        context = ApprovalContext(task=self._state.task, agent=self.name, instruction=step.instruction)
        verdict, why = self._approval.judge(pending, tool.side_effects, context)
        if verdict == "run":
            return await tool.run(valid)
        if verdict == "deny":
            return denied(name, valid, why)
        self._state.pending.append(pending.model_copy(update={"reason": why}))
        tracing.event(
            f"approval requested {name}",
            "approval",
            call_id=pending.id,
            tool=name,
            agent=self.name,
            step_id=step.id,
            reason=why,
        )
        logger.info("%s: %s waits for approval (%s): %s", self.name, name, pending.id, why)
        message = f"{WAITING} (call {pending.id}: {why})"
        return ToolResult(
            tool=name,
            ok=False,
            content=json.dumps({"error": "awaiting_approval", "message": message}),
            error=message,
            args=valid,
        )

    def _offered(self, step: PlanStep) -> ToolRegistry:
        """The tools the model may call for `step`: all of them for a plan step; for a request the plan did not make
        (chosen by a mention or the manager's model) in a team with a planner, only the ones that just read."""
        if step.id or not self._planned_writes_only:
            return self._tools
        return self._tools.subset(n for n in self._tools.names() if self._tools.get(n).side_effects == "read")

    async def decide(self) -> TextMessage | None:
        """Settle this member's pending calls with the decisions in the run state (every one decided) and return the
        message that posts their results.

        Every edit is validated before anything runs (an invalid one raises `ToolArgumentsError`, nothing is run); a
        denied or expired call never runs and its reason is its result. Exactly once across a crash: an approved call
        is marked as running (and the mark kept, `huddle.agents.approval.checkpoint`) before it runs and its result
        kept after, so a resume in a new process reuses a result instead of running the call again, and a call the
        crash interrupted is not run again either (whether it took effect is unknown: the conversation is told)."""
        mine = [p for p in self._state.pending if p.agent == self.name]
        if not mine:
            return None
        verdicts = [self._state.decided[p.id] for p in mine]
        runs = [
            self._tools.get(p.tool).validate(d.args or {}) if d.action == "edit" else None
            for p, d in zip(mine, verdicts, strict=True)
        ]
        results = [await self._once(call, d, edited) for call, d, edited in zip(mine, verdicts, runs, strict=True)]
        self._state.pending = [p for p in self._state.pending if p.agent != self.name]
        none = RequestUsage(prompt_tokens=0, completion_tokens=0)
        steps = [self._step_of(call) for call in mine]
        return self.report(steps, [(r, none) for r in results])

    async def _once(self, call: PendingCall, decision: ApprovalDecision, edited: Any) -> ToolResult:
        """One decided call's result: the kept one if it has settled before (or was cut off while it ran), else
        the denial's reason or the tool's result, with the marks kept before and after it runs."""
        ran = self._state.ran
        if call.id in ran:
            result = ran[call.id] or interrupted(call.tool, call.args)
        elif decision.action == "deny":
            result = denied(call.tool, call.args, decision.reason)
        else:
            ran[call.id] = None
            await checkpoint()
            result = await self._tools.get(call.tool).run(edited or call.args)
        ran[call.id] = result
        if not any(a.call.id == call.id for a in self._state.approvals):
            record = ApprovalRecord(
                call=call, action=decision.action, by=decision.by, decided=effects.now(), reason=decision.reason
            )
            self._state.approvals.append(record)
            tracing.event(
                f"approval {decision.action} {call.tool}",
                "approval",
                call_id=call.id,
                tool=call.tool,
                action=decision.action,
                by=decision.by,
                reason=decision.reason or None,
            )
        if call.step_id:
            self._state.complete(call.step_id, result.content, ok=result.ok)
        await checkpoint()
        return result

    def _step_of(self, call: PendingCall) -> PlanStep:
        """The plan step a pending call belongs to (an unplanned request's is step 0)."""
        plan = self._state.plan
        step = next((s for s in plan.steps if s.id == call.step_id), None) if plan else None
        return step or PlanStep.model_construct(id=0, assignee=self.name, instruction="", tool=call.tool, args=None)

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        """Stateless between turns: everything it needs is in the run state."""


def waiting(result: ToolResult) -> bool:
    """Whether `result` stands for a call that waits for a person's approval (it did not run)."""
    return not result.ok and (result.error or "").startswith(WAITING)


def plain_result(result: ToolResult) -> str:
    """A tool result as the responder is shown it: ``calculator: 17*23 + 5 = 396``, ``clock: Tuesday, ...``.

    An object result is shown as its ``summary`` string when it has one, else as JSON; a plain result of a call with
    one argument as ``argument = result``; a failure as ``tool failed: why``. Measured on the embedded SmolLM2: given
    ``calculator: 17*23 + 5 = 396`` it answers 396, given ``calculator(expression='17*23 + 5') -> 396`` it answers 409.
    """
    if not result.ok:
        return f"{result.tool} failed: {result.error or result.content}"
    try:
        parsed = json.loads(result.content)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        summary = parsed.get("summary")
        return f"{result.tool}: {summary if isinstance(summary, str) else result.content}"
    if len(result.args) == 1:
        return f"{result.tool}: {clip(str(next(iter(result.args.values()))))} = {result.content}"
    return f"{result.tool}: {result.content}"


def denied(tool: str, args: dict[str, Any], reason: str) -> ToolResult:
    """A call that was not run because it was denied: the reason is the tool's result the conversation gets."""
    return ToolResult(
        tool=tool,
        ok=False,
        content=json.dumps({"error": "denied", "message": reason}),
        error=f"denied: {reason}",
        args=args,
    )


def interrupted(tool: str, args: dict[str, Any]) -> ToolResult:
    """An approved call that a crash cut off while it ran: it is not run again (it may have taken effect)."""
    message = (
        "the process stopped while this approved call ran: it is not run again, and whether it took effect is unknown"
    )
    return ToolResult(
        tool=tool, ok=False, content=json.dumps({"error": "interrupted", "message": message}), error=message, args=args
    )


def clip(text: str, limit: int = MAX_ARG_CHARS) -> str:
    """`text` cut to `limit` characters with a marker saying how much was cut: a model's 2 MB argument must not
    become the next prompt (it is echoed in the result line every later agent reads)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters cut]"


def _clipped(args: dict[str, Any]) -> dict[str, Any]:
    """Arguments with every long value clipped (to a string), for the message's metadata (saved with the session)."""
    shown = {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in args.items()}
    return {k: args[k] if len(text) <= MAX_ARG_CHARS else clip(text) for k, text in shown.items()}


def _add_usage(a: RequestUsage, b: RequestUsage) -> RequestUsage:
    return RequestUsage(
        prompt_tokens=a.prompt_tokens + b.prompt_tokens, completion_tokens=a.completion_tokens + b.completion_tokens
    )


def _unparsable(arguments: str) -> str | None:
    """Why a model's tool-call arguments are not a JSON object, or None when they are."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError as exc:
        return f"the arguments are not valid JSON ({exc})"
    return None if isinstance(parsed, dict) else "the arguments must be a JSON object"


def _not_run(tool: str | None, message: str) -> ToolResult:
    """A step whose tool could not be called at all (no call, or an unknown tool); the model sees why."""
    return ToolResult(
        tool=tool or "none", ok=False, content=json.dumps({"error": "no_tool_call", "message": message}), error=message
    )
