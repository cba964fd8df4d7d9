"""The planner: turns the task into a `Plan` with one structured-output model call.

On OpenAI-compatible servers the call uses structured output; on the embedded model the same bounded schema becomes a
grammar. Whatever comes back is sanitised against the roster and the tools; if it cannot be parsed at all the team
answers directly (`fallback_plan`), so a weak model's failure never stalls a run.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, SystemMessage, UserMessage
from pydantic import ValidationError

from huddle import prompts
from huddle.agents.plan import MAX_STEPS, Plan, fallback_plan
from huddle.agents.plan_rules import evident_tool_steps
from huddle.agents.state import RunState
from huddle.models.structured import structured_output_args
from huddle.tools import ToolArgumentsError, ToolRegistry
from huddle.usage.budget import BudgetExhausted

_CONTEXT_LINES = 6
"""The team's latest messages the planner is shown, and all it keeps (and saves) of them."""


class PlannerAgent(BaseChatAgent):
    """Writes the run's plan into the shared `RunState` and posts it to the conversation."""

    def __init__(
        self,
        name: str,
        description: str,
        client: ChatCompletionClient,
        state: RunState,
        *,
        roster: Mapping[str, str],
        toolsets: Mapping[str, ToolRegistry],
        responder: str,
        tool_executor: str | None,
        prompt: str = "planner",
    ) -> None:
        """`toolsets`: the tools each tool-running member may call (the built-in executor and custom tool agents);
        `tool_executor`: the member that gets tool steps evident from the task (arithmetic, dates)."""
        super().__init__(name, description)
        self._client = client
        self._state = state
        self._roster = dict(roster)
        self._toolsets = dict(toolsets)
        self._responder = responder
        self._tool_executor = tool_executor
        self._prompt = prompt
        self._context: deque[str] = deque(maxlen=_CONTEXT_LINES)

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        self._context.extend(f"{m.source}: {m.to_model_text()}" for m in messages if m.source != "user")
        system = prompts.render(
            self._prompt,
            name=self.name,
            max_steps=MAX_STEPS - 1,
            roster="\n".join(f"- {n}: {d}" for n, d in self._roster.items() if n != self.name),
            tools="\n".join(
                f"- {member} runs {s['name']}: {s.get('description', '')} {json.dumps(s.get('parameters', {}))}"
                for member, tools in self._toolsets.items()
                for s in tools.schemas()
            )
            or "(none)",
        )
        context = "\n".join(self._context)
        user = f"Task: {self._state.task}" + (f"\n\nContext from the team:\n{context}" if context else "")
        note, usage, unusable = "", None, False
        try:
            result = await self._client.create(
                [SystemMessage(content=system), UserMessage(content=user, source="user")],
                cancellation_token=cancellation_token,
                **structured_output_args(self._client, Plan),
            )
            usage = result.usage
            raw = Plan.model_validate_json(result.content if isinstance(result.content, str) else "")
        except ValidationError:
            raw, note = fallback_plan(self._state.task, self._responder), " (the planner's output was unusable)"
            unusable = True
        except BudgetExhausted as exc:
            raw, note = fallback_plan(self._state.task, self._responder), f" ({exc})"
        executor = self._tool_executor
        if executor in self._toolsets and not any(s.assignee in self._toolsets for s in raw.steps):
            evident = evident_tool_steps(self._state.task, executor, self._toolsets[executor].names())
            if evident:
                shift = len(evident)
                shifted = [
                    s.model_copy(update={"id": s.id + shift, "depends_on": [d + shift for d in s.depends_on]})
                    for s in raw.steps
                ]
                raw = raw.model_copy(update={"steps": evident + shifted})
                note += f" (+{len(evident)} tool steps evident from the task)"
        plan = raw.sanitised(self._roster, self._responder, self._valid_tool_call)
        self._state.set_plan(plan)
        metadata = {"kind": "plan"}
        if len(plan.steps) == 1 or unusable:
            # Nothing to do but answer, or a plan the rules wrote after the model failed: a note for the trace (and
            # --verbose), not news for the user.
            metadata["internal"] = "true"
        return Response(
            chat_message=TextMessage(
                content=plan.describe() + note, source=self.name, models_usage=usage, metadata=metadata
            )
        )

    def _valid_tool_call(self, assignee: str, tool: str, args: Mapping[str, Any]) -> bool:
        """Whether to keep the step's arguments: they validate, or the assignee runs no tools we know of (a custom
        ChatAgent, or a member the step may be rerouted from)."""
        tools = self._toolsets.get(assignee)
        if tools is None:
            return True
        if tool not in tools:
            return False
        try:
            tools.get(tool).validate(args)
        except ToolArgumentsError:
            return False
        return True

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        self._context.clear()

    async def save_state(self) -> Mapping[str, Any]:
        return {"context": list(self._context)}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self._context = deque(state.get("context", []), maxlen=_CONTEXT_LINES)  # older versions saved them all
