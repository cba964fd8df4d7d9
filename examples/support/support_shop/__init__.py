"""The example shop as a huddle plugin: its orders tool agent (SQLite, refund policy in the tools), its intent router
(labelled examples, confirmations) and its prompts. ``pip install -e examples/support`` registers both agents under
the ``huddle.agents`` entry points ``orders`` and ``support_router``, which the ``support`` preset uses."""

from support_shop.orders import OrdersAgent, PolicyRefusal, order_id_in
from support_shop.router import EXAMPLES, SupportRouter

__all__ = ["EXAMPLES", "OrdersAgent", "PolicyRefusal", "SupportRouter", "order_id_in"]
