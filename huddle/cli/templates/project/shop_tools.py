"""This project's own tools: typed, documented Python functions that the team's tool executor may call.

`@tool` turns the type hints and the docstring into the JSON schema the model is shown and checks every call against
it, so a model's bad arguments (or an exception here) come back to the conversation as an error the model can read,
not as a crash. team.yaml names the tool ``shop_tools:shipping_quote``; huddle imports this module, so it must be
importable: ``pip install -e .`` once, or run huddle as ``python -m huddle`` from this folder.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field

from huddle.tools import tool

# Per destination: delivery time in business days, the price of the first kilogram and of each one after it (EUR).
RATES: dict[str, tuple[str, float, float]] = {
    "DE": ("2-4", 8.50, 2.00),
    "FR": ("2-4", 8.50, 2.00),
    "GB": ("3-5", 11.00, 2.50),
    "US": ("5-8", 19.00, 4.00),
}


@tool
def shipping_quote(country: str, weight_kg: Annotated[float, Field(gt=0, le=30)] = 1.0) -> dict[str, str | float]:
    """The delivery time and price of shipping one parcel to a country.

    Args:
        country: The destination's two-letter ISO country code, e.g. "DE".
        weight_kg: The parcel's weight in kilograms, at most 30.
    """
    code = country.strip().upper()
    if code not in RATES:
        # The policy lives in the tool: no conversation can talk the team into quoting a destination we do not serve.
        raise ValueError(f"we do not ship to {country!r}; we ship to {', '.join(sorted(RATES))}")
    days, first_kg, next_kg = RATES[code]
    price = first_kg + next_kg * (math.ceil(weight_kg) - 1)
    return {"country": code, "days": days, "price_eur": round(price, 2)}
