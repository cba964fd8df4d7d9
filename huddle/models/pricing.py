"""What a model call costs: the one place that prices a call, for the ledger, the budget's estimates and ``huddle
models``.

Where the price comes from, first that applies:

- ``profile``: the profile's own ``price:`` (``cached_input_per_mtok`` for cached prompt tokens, else the input rate);
- ``free``: the embedded model and scripted replies, which no one bills;
- ``table``: genai-prices' table (its snapshot bundled in the wheel, never updated over the network) for the model;
- ``unknown``: no price anywhere (a model the table does not list): cost 0, shown as unknown, never an error.

Why a table: a profile without ``price:`` was free, so ``huddle usage`` said $0 for real spending and a dollar budget
never stopped anything; and a hand-typed price goes stale or fits one model only (``default:gpt-4o`` was charged
gpt-4o-mini's). Cached prompt tokens (``prompt_tokens_details.cached_tokens``) are part of the prompt tokens and billed
at the provider's cached rate; what they saved is what they would have cost at the input rate, less that. Reasoning
tokens are part of the completion tokens and billed as output (OpenAI and the OpenAI-compatible APIs count them so),
so they need no price of their own: counting them again would bill them twice.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from huddle.config.settings import ModelProfile, Price
from huddle.usage import PriceSource

if TYPE_CHECKING:
    from genai_prices.types import ModelPrice

_FREE_PROVIDERS = ("local", "scripted")
_OPENAI = "openai"


@dataclass(frozen=True)
class Priced:
    """One call's price: what it cost, what its cached prompt tokens saved, and where the rates came from."""

    cost_usd: float
    saved_usd: float
    source: PriceSource


def price_call(profile: ModelProfile, prompt: int, completion: int, cached: int = 0) -> Priced:
    """The price of a call on `profile` with `prompt` tokens in (of which `cached` were read from the provider's
    prompt cache) and `completion` tokens out (reasoning tokens included, as the provider counts them)."""
    cached = max(0, min(cached, prompt))
    source = price_source(profile)
    if source == "profile" and profile.price is not None:
        return Priced(profile.price.cost(prompt, completion, cached), profile.price.saved(cached), source)
    table = _table_price(profile.model_name, profile.base_url) if source == "table" else None
    if table is None:
        return Priced(0.0, 0.0, source)
    table_cost = _table_cost(table, prompt, completion, cached)
    # What the cached tokens saved: the same call at the full input rate, priced only when some were cached.
    saved = _table_cost(table, prompt, completion, 0) - table_cost if cached else Decimal(0)
    return Priced(float(table_cost), float(saved), source)


def price_source(profile: ModelProfile) -> PriceSource:
    """Where `profile` 's prices come from (see the module's docstring)."""
    if profile.price is not None:
        return "profile"
    if profile.provider in _FREE_PROVIDERS:
        return "free"
    return "table" if _table_price(profile.model_name, profile.base_url) is not None else "unknown"


def rates(profile: ModelProfile) -> Price | None:
    """The per-million-token rates `profile` is priced at (a tiered table price at its first tier), for showing;
    None when the price is unknown."""
    source = price_source(profile)
    if source == "profile":
        return profile.price
    if source == "free":
        return Price()
    table = _table_price(profile.model_name, profile.base_url)
    if table is None:
        return None
    return Price(
        input_per_mtok=_rate(table, "input_mtok"),
        output_per_mtok=_rate(table, "output_mtok"),
        cached_input_per_mtok=_rate(table, "cache_read_mtok") if getattr(table, "cache_read_mtok", None) else None,
    )


@functools.cache
def _table_price(model: str, base_url: str | None) -> ModelPrice | None:
    """The table's current price for `model`, looked up once per model and endpoint (the first lookup loads the
    snapshot, ~14 ms): by the endpoint when it is a provider's own, else by the model's name (any OpenAI-compatible
    server); None when the table does not know the model. genai-prices loads here, not with huddle: it takes 0.15 s
    to import, which a run on the embedded model or an explicit price never needs."""
    from genai_prices import Usage, calc_price

    attempts: list[dict[str, str | None]] = [{"provider_id": _OPENAI}]
    if base_url is not None:
        attempts = [{"provider_api_url": base_url}, {"provider_id": None}]
    for where in attempts:
        try:
            return calc_price(Usage(), model, **where).model_price  # type: ignore[arg-type]
        except LookupError:
            continue
    return None


def _table_cost(table: ModelPrice, prompt: int, completion: int, cached: int) -> Decimal:
    """USD from the table's rates, tiers included; genai-prices counts cache reads inside the input tokens."""
    from genai_prices import Usage

    usage = Usage(input_tokens=prompt, output_tokens=completion, cache_read_tokens=cached)
    return table.calc_price(usage)["total_price"]


def _rate(table: ModelPrice, name: str) -> float:
    """One of the table's $/MTok rates as a number; a tiered one by its base (first-tier) rate."""
    from genai_prices.types import TieredPrices

    value = getattr(table, name, None)
    if isinstance(value, TieredPrices):
        return float(value.base)
    return float(value or 0)
