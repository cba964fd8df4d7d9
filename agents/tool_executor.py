"""The tool executor: runs the plan's tool steps, without a model call whenever the plan already has valid arguments.

Only a step whose tool or arguments the planner could not give costs a model call (a tool call chosen by the model
among this agent's tools). Every failure — unknown tool, invalid arguments, an exception, a timeout, a model that
does not call a tool — becomes a result line in the conversation and a failed step; the run goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, LLMMessage, RequestUsage, SystemMessage, UserMessage

from huddle import prompts
from huddle.agents.plan import PlanStep
from huddle.agents.state import RunState
from huddle.tools import ToolRegistry, ToolResult
from huddle.usage.budget import BudgetExhausted

logger = logging.getLogger("huddle.tools")


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
    ) -> None:
        super().__init__(name, description)
        self._client = client
        self._state = state
        self._tools = tools
        self._prompt = prompt

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        steps = self._state.ready_for(self.name)
        if not steps:
            instruction = messages[-1].to_model_text() if messages else self._state.task
            # Chosen by mention, similarity or the manager's model rather than the plan: an unplanned step 0.
            steps = [PlanStep.model_construct(id=0, assignee=self.name, instruction=instruction, tool=None, args=None)]
        outcomes = await asyncio.gather(*(self._run_step(step, cancellation_token) for step in steps))
        lines, usage = [], RequestUsage(prompt_tokens=0, completion_tokens=0)
        for step, (result, step_usage) in zip(steps, outcomes, strict=True):
            if step.id:
                self._state.complete(step.id, result.content, ok=result.ok)
            call = f"{result.tool}({', '.join(f'{k}={v!r}' for k, v in result.args.items())})"
            label = f"Step {step.id}" if step.id else "Request"
            lines.append(f"{label}: {call} -> {'' if result.ok else 'ERROR '}{result.content}")
            usage = _add_usage(usage, step_usage)
        return Response(
            chat_message=TextMessage(
                content="\n".join(lines),
                source=self.name,
                models_usage=usage if usage.prompt_tokens or usage.completion_tokens else None,
                metadata={
                    "kind": "tool_result",
                    "model_calls": str(sum(1 for _, u in outcomes if u.prompt_tokens)),
                    # The calls as data, for checks that must not parse the text (scenario expectations).
                    "calls": json.dumps([{"tool": r.tool, "args": r.args, "ok": r.ok} for r, _ in outcomes]),
                    # What the responder reads: one plain sentence per result (a small model copies a sentence
                    # correctly and misreads a JSON object, e.g. the clock's weekday).
                    "findings": "\n".join(plain_result(r) for r, _ in outcomes),
                },
            )
        )

    async def _run_step(self, step: PlanStep, cancellation_token: CancellationToken) -> tuple[ToolResult, RequestUsage]:
        """Run the step's tool directly when the plan gave valid arguments; otherwise let the model choose the call."""
        args = step.arguments()
        none = RequestUsage(prompt_tokens=0, completion_tokens=0)
        if step.tool in self._tools.names() and args is not None:
            return await self._tools.get(step.tool).run(args), none
        if not self._client.model_info["function_calling"]:
            return _not_run(step.tool, "the step gives no valid tool call and this model cannot call tools"), none
        system = prompts.render(self._prompt, name=self.name, task=self._state.task, instruction=step.instruction)
        conversation: list[LLMMessage] = [
            SystemMessage(content=system),
            UserMessage(content=step.instruction, source="user"),
        ]
        usage = none
        for attempt in range(2):  # a malformed tool call is re-asked once, with the parse error as feedback
            try:
                result = await self._client.create(
                    conversation, tools=self._tools.schemas(), cancellation_token=cancellation_token
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
        if call.name not in self._tools.names():
            allowed = ", ".join(self._tools.names())
            logger.warning("%s refused tool %r: not on its allowlist (%s)", self.name, call.name, allowed)
            return _not_run(call.name, f"tool {call.name!r} is not on {self.name}'s allowlist ({allowed})"), usage
        return await self._tools.get(call.name).run(call.arguments), usage

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        """Stateless between turns: everything it needs is in the run state."""


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
        return f"{result.tool}: {next(iter(result.args.values()))} = {result.content}"
    return f"{result.tool}: {result.content}"


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
