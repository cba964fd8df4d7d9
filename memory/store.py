"""`VectorMemory`: scoped, provenance-carrying memory items in one Chroma collection, recalled within a token budget.

The collection lives on disk under ``<data_dir>/chroma`` (or on a Chroma server when ``memory.chroma_url`` is set),
uses cosine distance, and records which embedder filled it; opening it with a different embedder is a `ConfigError`
rather than silently comparing vectors from two models. Every read keeps only the caller's scopes (checked on each
returned item, whether Chroma filtered or not), so an item from another scope is never returned. Expired items
(TTL) are never returned and are deleted lazily: when a recall meets them, or by a listing or `forget_expired`.
Chroma calls are serialised by one lock per store, which is what a single process with several agents on threads
needs; embedding happens outside that lock. Whatever a Chroma call raises (a server that went away, a chromadb
error) is one `MemoryUnavailable`, so callers that can go on without memory catch one type and the CLI prints one line.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from huddle.errors import ConfigError, HuddleError
from huddle.memory.chunking import chunk_text
from huddle.memory.embedders import Embedder, embedder_from_settings
from huddle.memory.items import Kind, MemoryItem, RecalledItem, check_scope
from huddle.memory.selection import select
from huddle.models.tokens import count_text
from huddle.secrets import redact
from huddle.storage.lease import exclusive

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

    from huddle.config.settings import Settings

EMBEDDER_KEY = "huddle:embedder"
DIM_KEY = "huddle:dim"
DocumentSource = Path | str | tuple[str, str]
Items = list[MemoryItem]
Recalled = list[RecalledItem]
Hits = list[tuple[MemoryItem, float]]  # an item and its cosine distance to the query
Where = dict[str, Any]
# Neighbours fetched by the unfiltered first search of a recall: enough that the allowed scopes usually hold k.
_PROBE_FACTOR = 20
_MIN_PROBE = 100


class MemoryUnavailable(HuddleError):
    """The vector store could not be reached or failed an operation; the message names the store and the cause."""


def open_client(path: Path | None = None, url: str | None = None) -> ClientAPI:
    """A Chroma client on a directory, or on a server at `url` (``http(s)://host[:port]``), with telemetry off."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    if url is None:
        if path is None:
            raise ValueError("VectorMemory needs a path or a url")
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=path, settings=settings)
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"memory.chroma_url: expected http(s)://host[:port], got {url!r}")
    ssl = parsed.scheme == "https"
    try:
        return chromadb.HttpClient(
            host=parsed.hostname, port=parsed.port or (443 if ssl else 8000), ssl=ssl, settings=settings
        )
    except ValueError as exc:
        raise MemoryUnavailable(f"memory.chroma_url: cannot reach the Chroma server at {url}: {exc}") from None


def open_collection(client: ClientAPI, name: str, embedder: Embedder) -> Collection:
    """The named cosine collection, created for `embedder` if missing; refused if another embedder made it."""
    from chromadb.errors import ChromaError, NotFoundError

    try:
        collection = client.get_collection(name, embedding_function=None)
    except NotFoundError:
        metadata = {EMBEDDER_KEY: embedder.name, DIM_KEY: embedder.dim}
        try:
            return client.create_collection(
                name, configuration={"hnsw": {"space": "cosine"}}, metadata=metadata, embedding_function=None
            )
        except ChromaError as exc:  # another process may have created it in between: then check theirs
            try:
                collection = client.get_collection(name, embedding_function=None)
            except NotFoundError:
                raise ConfigError(f"memory collection {name!r}: {exc}") from None
    _check_collection(collection, embedder)
    return collection


def _check_collection(collection: Collection, embedder: Embedder) -> None:
    metadata = collection.metadata or {}
    found = (metadata.get(EMBEDDER_KEY), metadata.get(DIM_KEY))
    if found != (embedder.name, embedder.dim):
        made_by = f"{found[0]} (dim {found[1]})" if found[0] else "something other than huddle (no embedder recorded)"
        raise ConfigError(
            f"memory collection {collection.name!r} was made with embedder {made_by}, but the configured embedder is "
            f"{embedder.name} (dim {embedder.dim}); vectors from different embedders cannot be compared. Set "
            f"memory.collection to a new name, or memory.embedder back to the one that made it."
        )
    with warnings.catch_warnings():
        # Chroma 1.5 stores "no embedding function" as a "legacy" config and warns about it on every read.
        warnings.filterwarnings("ignore", "legacy embedding function config", DeprecationWarning)
        space = (collection.configuration.get("hnsw") or {}).get("space")
    if space != "cosine":
        raise ConfigError(f"memory collection {collection.name!r} uses {space!r} distance; huddle needs 'cosine'")


def _where(first: Where, *more: Where | None) -> Where:
    """Chroma's filter for all the given conditions (its ``$and`` needs at least two)."""
    present = [first, *(condition for condition in more if condition)]
    return {"$and": present} if len(present) > 1 else first


def _scope_list(scopes: str | Sequence[str]) -> list[str]:
    listed = [scopes] if isinstance(scopes, str) else list(scopes)
    if not listed:
        raise ValueError("recall needs at least one scope")
    return [check_scope(scope) for scope in listed]


class VectorMemory:
    """Memory items in a Chroma collection: add facts and documents, recall by meaning, list and forget."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        path: Path | None = None,
        url: str | None = None,
        collection: str = "huddle",
        token_model: str = "gpt-4o",
    ) -> None:
        self.embedder = embedder
        self.token_model = token_model
        self._lock = threading.RLock()
        self._location = f"the Chroma server at {url}" if url else f"{path}"
        # Two processes opening a new store at once race to create Chroma's tables: the first open is serialised.
        opening: AbstractContextManager[None] = nullcontext()
        if url is None and path is not None:
            opening = exclusive(path.with_name(f"{path.name}.lock"), f"shared memory {path}")
        with opening:
            self._client = open_client(path, url)
            with self._chroma():
                self._collection = open_collection(self._client, collection, embedder)
                self._max_batch = self._client.get_max_batch_size()

    @classmethod
    def from_settings(cls, settings: Settings, embedder: Embedder | None = None) -> VectorMemory:
        """The store ``memory:`` in huddle.yaml describes: ``<data_dir>/chroma`` or ``chroma_url``."""
        memory = settings.memory
        return cls(
            embedder or embedder_from_settings(settings),
            path=None if memory.chroma_url else settings.data_dir / "chroma",
            url=memory.chroma_url,
            collection=memory.collection,
        )

    @property
    def collection_name(self) -> str:
        return self._collection.name

    @contextmanager
    def _chroma(self) -> Iterator[None]:
        """One Chroma access under the store's lock; its failure is a `MemoryUnavailable` naming the store (our own
        errors, such as an embedder mismatch, pass as they are)."""
        with self._lock:
            try:
                yield
            except HuddleError:
                raise
            except Exception as exc:
                raise MemoryUnavailable(
                    f"shared memory ({self._location}) failed: {type(exc).__name__}: {exc}"
                ) from exc

    # --- writing -----------------------------------------------------------------------------------------------

    def add(
        self,
        text: str,
        *,
        scope: str,
        kind: Kind = "fact",
        tags: Iterable[str] = (),
        agent: str = "user",
        run_id: str | None = None,
        ttl_s: float | None = None,
    ) -> MemoryItem:
        """Remember one text in `scope`, attributed to `agent` and `run_id`, forgotten after `ttl_s` seconds if set."""
        check_scope(scope)  # before MemoryItem, whose validation would wrap the error in a ValidationError
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        now = time.time()
        item = MemoryItem(
            text=redact(text),  # "remember my key is sk-..." must not put the key in the store
            scope=scope,
            kind=kind,
            tags=list(tags),
            agent=agent,
            run_id=run_id,
            created_at=now,
            expires_at=None if ttl_s is None else now + ttl_s,
        )
        return self.add_items([item])[0]

    def add_items(self, items: Sequence[MemoryItem]) -> Items:
        """Store fully built items in batches (one embedding call per batch); the bulk path behind every add."""
        for start in range(0, len(items), self._max_batch):
            batch = items[start : start + self._max_batch]
            vectors = self.embedder.embed_passages([item.text for item in batch])
            with self._chroma():
                self._collection.add(
                    ids=[item.id for item in batch],
                    embeddings=vectors,  # type: ignore[arg-type]  # list invariance: rows are float lists
                    documents=[item.text for item in batch],
                    metadatas=[item.to_metadata() for item in batch],
                )
        return list(items)

    def add_documents(
        self,
        sources: Iterable[DocumentSource],
        *,
        scope: str,
        chunk_tokens: int = 200,
        overlap_tokens: int = 30,
        tags: Iterable[str] = (),
        agent: str = "user",
        run_id: str | None = None,
    ) -> Items:
        """Chunk markdown/text files (paths) or ``(name, text)`` pairs into document items with their source.

        Ingesting a source again replaces its earlier chunks in that scope instead of duplicating them.
        """
        check_scope(scope)
        # Read and chunk everything first, so an unreadable file fails the call before anything is replaced.
        documents = [
            (name, chunk_text(text, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens, model=self.token_model))
            for name, text in map(_read_source, sources)
        ]
        items: Items = []
        now, tag_list = time.time(), list(tags)
        for name, chunks in documents:
            self._delete(_where({"scope": scope}, {"source": name}))
            items.extend(
                MemoryItem(
                    text=chunk,
                    scope=scope,
                    kind="document",
                    tags=tag_list,
                    agent=agent,
                    run_id=run_id,
                    created_at=now,
                    source=name,
                    chunk=position,
                )
                for position, chunk in enumerate(chunks)
            )
        return self.add_items(items)

    # --- reading -----------------------------------------------------------------------------------------------

    def recall(
        self,
        query: str,
        *,
        scopes: str | Sequence[str],
        k: int = 5,
        min_score: float | None = None,
        token_budget: int | None = None,
        kinds: Sequence[Kind] | None = None,
    ) -> Recalled:
        """The `k` items of `scopes` most similar to `query`, best first, filtered by score and token budget.

        `score` is cosine similarity in [-1, 1]. With `token_budget`, the chosen items' texts together count at
        most that many tokens (`huddle.memory.selection`). Only the `k` nearest items are candidates.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if token_budget is not None and token_budget < 0:
            raise ValueError(f"token_budget must not be negative, got {token_budget}")
        allowed = _scope_list(scopes)
        vector = self.embedder.embed_queries([query])[0]
        while True:
            hits = self._nearest(vector, allowed, kinds, k)
            now = time.time()
            expired = [item.id for item, _ in hits if item.expired(now)]
            if not expired:
                break
            with self._chroma():  # lazily, and search again so that k live items can fill the places
                self._collection.delete(ids=expired)
        candidates = [
            RecalledItem(
                item=item,
                score=min(1.0, max(-1.0, 1.0 - distance)),
                tokens=count_text(item.text, self.token_model),
            )
            for item, distance in hits
        ]
        return select(candidates, k=k, min_score=min_score, token_budget=token_budget)

    def _nearest(self, vector: Sequence[float], allowed: Sequence[str], kinds: Sequence[Kind] | None, k: int) -> Hits:
        """The `k` nearest items of the allowed scopes and kinds, with their cosine distances, nearest first.

        Chroma evaluates a metadata filter by scanning every item's metadata (about 0.4 s for 10 scopes over 100k
        items, against 2-5 ms for a plain vector search), so we first search without a filter for a generous
        number of neighbours and keep the allowed ones; only if fewer than `k` of those are allowed do we pay for
        the filtered search. Both give the same items: an allowed item outside the unfiltered top-n is farther
        away than every item inside it.
        """

        def wanted(hit: tuple[MemoryItem, float]) -> bool:
            return hit[0].scope in allowed and (not kinds or hit[0].kind in kinds)

        probe = max(_PROBE_FACTOR * k, _MIN_PROBE)
        nearest = self._query(vector, probe, None)
        hits = [hit for hit in nearest if wanted(hit)]
        if len(hits) >= k or len(nearest) < probe:  # enough allowed ones, or the search saw every item
            return hits[:k]
        where = _where({"scope": {"$in": list(allowed)}}, {"kind": {"$in": list(kinds)}} if kinds else None)
        return [hit for hit in self._query(vector, k, where) if wanted(hit)]

    def _query(self, vector: Sequence[float], n: int, where: Where | None) -> Hits:
        with self._chroma():
            result = self._collection.query(
                query_embeddings=[vector],
                n_results=n,
                where=where,
                include=["documents", "metadatas", "distances"],
            )
        return [
            (MemoryItem.from_record(item_id, text, metadata), float(distance))
            for item_id, text, metadata, distance in zip(
                result["ids"][0],
                (result["documents"] or [[]])[0],
                (result["metadatas"] or [[]])[0],
                (result["distances"] or [[]])[0],
                strict=True,
            )
        ]

    def get(self, item_id: str) -> MemoryItem | None:
        """The item with this id, or None if there is none or it has expired."""
        items = self._get(ids=[item_id])
        return items[0] if items else None

    def list(self, scope: str | None = None, *, limit: int | None = 100) -> Items:
        """Live items, newest first, of one scope or of all; `limit=None` for every one."""
        if scope is not None:
            check_scope(scope)
        self.forget_expired([scope] if scope else None)
        items = self._get(where={"scope": scope} if scope else None)
        items.sort(key=lambda item: item.created_at, reverse=True)
        return items if limit is None else items[:limit]

    def count(self, scope: str | None = None) -> int:
        """Number of stored items (of one scope, or all), expired ones not yet deleted included."""
        if scope is None:
            with self._chroma():
                return self._collection.count()
        with self._chroma():
            return len(self._collection.get(where={"scope": check_scope(scope)}, include=[])["ids"])

    # --- forgetting --------------------------------------------------------------------------------------------

    def forget(self, item_id: str) -> bool:
        """Delete one item; False if no item has that id."""
        with self._chroma():
            if not self._collection.get(ids=[item_id], include=[])["ids"]:
                return False
            self._collection.delete(ids=[item_id])
        return True

    def forget_scope(self, scope: str) -> int:
        """Delete every item of `scope`; returns how many."""
        return self._delete({"scope": check_scope(scope)})

    def forget_expired(self, scopes: Sequence[str] | None = None) -> int:
        """Delete items whose TTL has passed (in `scopes`, or everywhere); returns how many."""
        expired: Where = {"expires_at": {"$lte": time.time()}}
        in_scopes = {"scope": {"$in": [check_scope(scope) for scope in scopes]}} if scopes else None
        return self._delete(_where(expired, in_scopes))

    # --- Chroma access -----------------------------------------------------------------------------------------

    def _get(self, ids: Sequence[str] | None = None, where: Where | None = None) -> Items:
        with self._chroma():
            result = self._collection.get(
                ids=list(ids) if ids is not None else None,
                where=where,
                include=["documents", "metadatas"],
            )
        now = time.time()
        items = [
            MemoryItem.from_record(item_id, text, metadata)
            for item_id, text, metadata in zip(
                result["ids"], result["documents"] or [], result["metadatas"] or [], strict=True
            )
        ]
        return [item for item in items if not item.expired(now)]

    def _delete(self, where: Where) -> int:
        with self._chroma():
            ids = self._collection.get(where=where, include=[])["ids"]
            if ids:
                self._collection.delete(ids=ids)
        return len(ids)


def _read_source(source: DocumentSource) -> tuple[str, str]:
    """``(name, text)`` of a document source: a pair as given, or a UTF-8 file named by its absolute path."""
    if isinstance(source, tuple):
        return source
    path = Path(source)
    try:
        return str(path.resolve()), path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HuddleError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise HuddleError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise HuddleError(f"{path}: cannot read: {exc.strerror}") from None
