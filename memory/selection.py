"""Which recalled items make it into a prompt: best first, at most k, above a score floor, within a token budget.

Kept apart from the store so the budget rule can be tested exhaustively without embeddings: items are taken in
score order; one that would push the running total over the budget is skipped, not truncated, and a smaller,
lower-scored item after it may still fit. The total of the chosen items' tokens never exceeds the budget.
"""

from __future__ import annotations

from collections.abc import Iterable

from huddle.memory.items import RecalledItem


def select(
    candidates: Iterable[RecalledItem],
    *,
    k: int,
    min_score: float | None = None,
    token_budget: int | None = None,
) -> list[RecalledItem]:
    """Greedy choice of up to `k` candidates by descending score under `min_score` and `token_budget`."""
    chosen: list[RecalledItem] = []
    used = 0
    for candidate in sorted(candidates, key=lambda c: c.score, reverse=True):
        if len(chosen) >= k or (min_score is not None and candidate.score < min_score):
            break
        if token_budget is not None:
            if used + candidate.tokens > token_budget:
                continue
            used += candidate.tokens
        chosen.append(candidate)
    return chosen
