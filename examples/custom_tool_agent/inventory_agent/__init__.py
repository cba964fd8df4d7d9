"""An example tool agent for huddle: stock levels and reorders for one warehouse.

A tool agent is any class with ``name``, ``description`` and ``tools()``; the team runs its tools for plan steps
assigned to it, and the manager reads its description. ``config:`` in the team YAML becomes its keyword arguments.
"""

from __future__ import annotations

from huddle.tools import Tool, tool

_CATALOGUE = {"A-100": "USB-C cable, 1 m", "B-200": "Laptop stand", "C-300": "Wireless mouse"}
_STOCK = {"eu-1": {"A-100": 42, "B-200": 0, "C-300": 7}, "us-1": {"A-100": 5, "B-200": 12, "C-300": 0}}


@tool
def sku_info(sku: str) -> str:
    """What a stock-keeping unit (SKU) is, by its code.

    Args:
        sku: The SKU code, e.g. "A-100".
    """
    if sku not in _CATALOGUE:
        raise ValueError(f"unknown SKU {sku!r}; known: {', '.join(_CATALOGUE)}")
    return _CATALOGUE[sku]


class InventoryAgent:
    """Checks stock and places reorders in one warehouse."""

    def __init__(self, warehouse: str = "eu-1", reorder_limit: int = 100) -> None:
        if warehouse not in _STOCK:
            raise ValueError(f"unknown warehouse {warehouse!r}; known: {', '.join(_STOCK)}")
        self.name = "inventory"
        self.description = f"Checks stock levels and places reorders in warehouse {warehouse}."
        self.warehouse = warehouse
        self.reorder_limit = reorder_limit
        self.stock = dict(_STOCK[warehouse])

    def tools(self) -> list[Tool]:
        stock, limit, warehouse = self.stock, self.reorder_limit, self.warehouse

        @tool
        def check_stock(sku: str) -> dict[str, str | int]:
            """How many units of a SKU are in stock in this warehouse.

            Args:
                sku: The SKU code, e.g. "A-100".
            """
            if sku not in stock:
                raise ValueError(f"unknown SKU {sku!r} in {warehouse}")
            return {"sku": sku, "warehouse": warehouse, "in_stock": stock[sku]}

        @tool(side_effects="write")
        def reorder(sku: str, quantity: int) -> str:
            """Order more units of a SKU for this warehouse.

            Args:
                sku: The SKU code.
                quantity: Units to order (1 up to the warehouse's reorder limit).
            """
            if not 1 <= quantity <= limit:
                raise ValueError(f"quantity must be between 1 and {limit}, got {quantity}")
            return f"ordered {quantity} x {sku} for {warehouse}"

        return [check_stock, reorder, sku_info]
