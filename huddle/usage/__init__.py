"""Usage and budgets: the ledger of every model call (`ledger`) and the governor that lets budgets steer (`budget`).

The ledger's names are re-exported here because every layer records or reads usage; budgets are imported from
`huddle.usage.budget`.
"""

from huddle.usage.ledger import (
    PriceSource,
    TokenSource,
    Totals,
    UsageLedger,
    UsageRecord,
    UsageScope,
    current_scope,
    usage_scope,
)

__all__ = [
    "PriceSource",
    "TokenSource",
    "Totals",
    "UsageLedger",
    "UsageRecord",
    "UsageScope",
    "current_scope",
    "usage_scope",
]
