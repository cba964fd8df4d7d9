"""The shop's intent router: huddle's `IntentRouter` with the shop's intents, and the rules a support desk needs.

On top of the generic router (nearest labelled example, the model only when unclear), it reads order numbers from
the message and then from what the memory agent recalled, and asks for a missing one. A refund or a cancellation is
planned at once, beside the order's lookup, as an approval-gated tool call (the preset gives the orders agent
``approval: always`` for them): the turn pauses before anything changes, and the customer answers.

The customer, not an operator, approves in a support chat, so mapping their answer to the decision is the router's
too: `approval_reply` reads "yes" as the approval and "no" / "wait" as a denial whose
reason the responder gets, and `approval_question` is what the customer is asked meanwhile. Both are plain functions
of the text and the waiting calls, with no model call; `huddle.evals.approvals` uses them for scenarios.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken

from huddle.agents.approval import ApprovalDecision, PendingCall
from huddle.agents.intent_router import Decision, Guess, IntentRouter
from huddle.agents.plan import PlanStep
from support_shop.orders import order_id_in

EXAMPLES: dict[str, tuple[str, ...]] = {
    "refund": (
        "I would like my money returned",
        "Please reimburse me for this purchase",
        "The thing I received is faulty, I need a refund",
        "Can I send this back for a full refund?",
        "I'd like to send back something I purchased",
        "It came damaged and I want to be refunded",
        "The product stopped working, give me my money back",
        "Refund me please, it is defective",
        "I'm unhappy with what I bought and want a refund",
    ),
    "cancellation": (
        "I need to cancel this purchase",
        "Please call off my order",
        "Stop the order, I don't want it any more",
        "I changed my mind, don't send it",
        "Could you cancel the order before it goes out?",
        "I bought the wrong thing by mistake, cancel it please",
    ),
    "order_status": (
        "Where's my parcel right now?",
        "When is my delivery coming?",
        "Has my purchase been sent out?",
        "Can you tell me the status of my order?",
        "I'm still waiting for my package",
        "Track my shipment please",
        "Is my order on its way?",
        "When will the package be delivered?",
        "What's happening with my order?",
    ),
    "policy_question": (
        "What's your policy on returns?",
        "How many days do I get to send something back?",
        "Is shipping refunded when I return something?",
        "How long is the return period?",
        "Can discounted items be returned?",
        "How soon will I see the refund money?",
        "Do you deliver abroad?",
        "How much does shipping cost?",
    ),
    "escalation": (
        "I'd like to speak with a person",
        "Get me a supervisor",
        "Put me through to a real human",
        "I want to make a formal complaint",
        "Can a human agent help me instead?",
        "I'm fed up, let me talk to someone in charge",
    ),
    "other": (
        "Hey",
        "Good afternoon",
        "Greetings to you",
        "Thanks a lot, that's everything",
        "Much appreciated",
        "Alright",
        "Keep in mind that my order number is 1042",
        "I'm called Bob",
        "My email address is bob@example.com",
    ),
    "out_of_scope": (
        "Will it rain this weekend?",
        "I need help filing my income tax",
        "Tell me something funny",
        "Write me some JavaScript code",
        "Who won the match yesterday?",
        "What's the capital city of Spain?",
        "Recommend a good place to eat",
        "Book a hotel for me in Rome",
        "Give me a recipe for lasagne",
        "Help me with my math homework",
        "I need a lawyer's opinion",
        "Which stock should I buy?",
    ),
}
"""Labelled example utterances per intent (replace via config). They share no sentence with the scenarios, the
tests or the held-out set in bench/data/ (tests/test_support.py checks), so those measure the router honestly."""

FILLER = "other"  # greetings, thanks and facts to remember: ignored in a sentence of a longer message
NOTES = {"out_of_scope": "Out of scope: not about this shop's orders, returns, refunds, cancellations or shipping."}
_AFFIRM = re.compile(
    r"^\W*(yes|yeah|yep|yup|sure|ok|okay|please do|please go ahead|go ahead|do it|confirm(ed)?|correct|that's right)\b",
    re.IGNORECASE,
)
_DECLINE = re.compile(r"^\W*(no|nope|don't|do not|never mind|nevermind|stop|wait|hold on|not yet)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Action:
    """What an intent makes the team do: a tool, and whether it needs an order number."""

    tool: str
    needs_order: bool


ACTIONS: dict[str, Action] = {
    "refund": Action("issue_refund", needs_order=True),
    "cancellation": Action("cancel_order", needs_order=True),
    "order_status": Action("lookup_order", needs_order=True),
    "escalation": Action("escalate_to_human", needs_order=False),
}
LOOKUP_TOOL = "lookup_order"
QUESTIONS = {
    "issue_refund": "Shall I refund order {order_id} in full to your original payment method?",
    "cancel_order": "Shall I cancel order {order_id}?",
}
"""What the customer is asked while a call waits for their approval, per tool."""


class SupportRouter(IntentRouter):
    """Detects the customer's intent and plans the support steps; a model call only when the examples are unsure.

    It remembers for the customer's next message which action waits for an order number.
    """

    def __init__(
        self,
        name: str = "intent",
        examples: Mapping[str, Sequence[str]] | None = None,
        min_score: float = 0.85,
        min_margin: float = 0.015,
    ) -> None:
        """The arguments of `IntentRouter`, with the shop's examples by default."""
        super().__init__(
            name,
            examples=examples or EXAMPLES,
            notes=NOTES,
            filler=FILLER,
            min_score=min_score,
            min_margin=min_margin,
            prompt="support_shop.prompts:support_intent",
        )
        self._awaiting_order: str | None = None

    def from_context(self, text: str, guess: Guess, clear: bool) -> Decision | None:
        """The order number the team asked for, as the intent that asked for it."""
        awaiting = self._awaiting_order
        if awaiting is not None and order_id_in(text) and (not clear or guess.intent in (FILLER, awaiting)):
            return Decision(awaiting, "context", guess)
        return None

    def plan_for(
        self, decision: Decision, text: str, messages: Sequence[BaseChatMessage]
    ) -> tuple[list[str], list[PlanStep]]:
        """The note for the team (what was decided, what is missing) and the tool steps to run: a refund or a
        cancellation beside the lookup, so the customer is asked with the order's details at hand."""
        lines, _ = super().plan_for(decision, text, messages)
        action = ACTIONS.get(decision.intent)
        self._awaiting_order = None
        order_id = order_id_in(text) or _recalled_order(messages)
        if order_id:
            lines.append(f"Order: {order_id}")
        if action is None:
            return lines, []
        if action.needs_order and order_id is None:
            self._awaiting_order = decision.intent
            lines.append("Missing: order number (ask the customer for it)")
            return lines, []
        args = _arguments(action.tool, order_id, text)
        if action.tool in QUESTIONS and order_id is not None:
            return lines, [self.step(1, LOOKUP_TOOL, {"order_id": order_id}), self.step(2, action.tool, args)]
        return lines, [self.step(1, action.tool, args)]

    @staticmethod
    def approval_reply(text: str, pending: Sequence[PendingCall]) -> dict[str, ApprovalDecision] | None:
        """The customer's answer to the waiting calls: "yes" approves them all, "no" / "wait" denies them all with
        their words as the reason; anything else (another order, another question) is a new message (None)."""
        mentioned = order_id_in(text)
        if mentioned is not None and any(p.args.get("order_id") not in (None, mentioned) for p in pending):
            return None
        if _AFFIRM.match(text):
            return {p.id: ApprovalDecision.approve() for p in pending}
        if _DECLINE.match(text):
            reason = f"the customer declined: {' '.join(text.split())[:150]}"
            return {p.id: ApprovalDecision.deny(reason) for p in pending}
        return None

    @staticmethod
    def approval_question(pending: Sequence[PendingCall]) -> str:
        """What the customer is asked while calls wait: one question per call, then how to answer."""
        asked = [QUESTIONS.get(p.tool, "Shall I go ahead with " + p.tool + "?").format(**p.args) for p in pending]
        return " ".join([*asked, "Please reply yes to go ahead, or no to leave it as it is."])

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        self._awaiting_order = None

    async def save_state(self) -> Mapping[str, Any]:
        return {"awaiting_order": self._awaiting_order}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self._awaiting_order = state.get("awaiting_order")


def _recalled_order(messages: Sequence[BaseChatMessage]) -> str | None:
    """An order number the memory agent recalled for this message (a fact the customer gave us earlier)."""
    for message in messages:
        if message.metadata.get("kind") == "memory":
            found = order_id_in(message.to_model_text(), loose=False)
            if found:
                return found
    return None


def _arguments(tool_name: str, order_id: str | None, reason: str) -> dict[str, Any]:
    """A tool's arguments from what the conversation gave: the order number and the customer's words."""
    args: dict[str, Any] = {} if order_id is None else {"order_id": order_id}
    if tool_name in ("issue_refund", "escalate_to_human"):
        args["reason"] = " ".join(reason.split())[:150] or "customer request"
    return args
