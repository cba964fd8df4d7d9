"""The shop's orders: a tool agent over a SQLite orders database whose tools enforce the refund policy.

Why the policy lives in the tools: a model can be talked into anything, a ``WHERE`` clause cannot. `issue_refund`
refuses an order outside the return window whatever the conversation says, and `cancel_order` an order that shipped.

The orders database is any SQLite file with the tables of ``examples/support/fixtures/orders.sql``: ``orders`` (id,
customer, email, item, total_usd, returnable, status, ordered_on, delivered_on), ``refunds`` (order_id, amount_usd,
reason) and ``escalations`` (order_id, reason, status).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import Field

from huddle.tools import Tool, tool


class _Settings(Protocol):
    @property
    def data_dir(self) -> Path: ...


class _Team(Protocol):
    @property
    def settings(self) -> _Settings: ...


class _Context(Protocol):
    """The part of the team context (what ``bind`` receives) the orders agent reads: the team's settings."""

    @property
    def team(self) -> _Team: ...


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

    def bind(self, context: _Context) -> None:
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
