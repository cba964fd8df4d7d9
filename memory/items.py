"""What a memory item is: text with a scope, a kind, tags and provenance, and how it maps onto Chroma metadata.

Scopes are ``kind:value`` strings (``team:support``, ``user:alice``, ``session:4f2a``), so that one collection can
hold many teams', users' and sessions' memories while every read names the scopes it may see. Chroma 1.5 metadata
holds str/int/float/bool and non-empty lists of those but never ``None`` or ``[]``, so unset fields and empty tag
lists are left out of the metadata and restored as ``None``/``[]`` when read back; tags are a native string list.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from huddle.errors import HuddleError

Kind = Literal["fact", "message", "document"]
KINDS: tuple[Kind, ...] = ("fact", "message", "document")
_SCOPE = re.compile(r"^[a-z][a-z0-9_-]{0,31}:\S(?:.{0,198}\S)?$")
_OPTIONAL_FIELDS = ("run_id", "source", "chunk", "expires_at")


class InvalidScopeError(HuddleError, ValueError):
    """A scope string is not ``kind:value``; a user error on the CLI and a ValueError for library callers."""


def check_scope(scope: str) -> str:
    """`scope` unchanged if it is ``kind:value`` (lower-case kind, non-blank value without outer spaces)."""
    if not _SCOPE.match(scope):
        raise InvalidScopeError(
            f"invalid memory scope {scope!r}: expected kind:value such as team:support, user:alice or session:abc"
        )
    return scope


class Scope:
    """Builders for the usual scope strings, so callers do not hand-format them."""

    @staticmethod
    def team(name: str) -> str:
        """Memory shared by every agent of one team."""
        return check_scope(f"team:{name}")

    @staticmethod
    def user(name: str) -> str:
        """Memory about, or written by, one user across sessions."""
        return check_scope(f"user:{name}")

    @staticmethod
    def session(session_id: str) -> str:
        """Memory that belongs to one conversation."""
        return check_scope(f"session:{session_id}")


def new_id() -> str:
    """64 random bits in hex: short enough to type into ``huddle memory forget``, collision-free in practice."""
    return uuid.uuid4().hex[:16]


class MemoryItem(BaseModel):
    """One remembered text and where it came from."""

    id: str = Field(default_factory=new_id)
    text: str = Field(min_length=1)
    scope: str
    kind: Kind = "fact"
    tags: list[str] = Field(default_factory=list)
    agent: str = "user"
    run_id: str | None = None
    created_at: float = Field(default_factory=time.time)
    source: str | None = Field(None, description="The file (or name) a document chunk was read from.")
    chunk: int | None = Field(None, description="Position of a document chunk within its source, from 0.")
    expires_at: float | None = Field(None, description="Epoch seconds after which the item is no longer recalled.")

    @field_validator("scope")
    @classmethod
    def _valid_scope(cls, value: str) -> str:
        return check_scope(value)

    @field_validator("created_at", "expires_at")
    @classmethod
    def _milliseconds(cls, value: float | None) -> float | None:
        # Chroma returns some full-precision floats one ulp off; millisecond values survive the round trip exactly.
        return None if value is None else round(value, 3)

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, value: list[str]) -> list[str]:
        # Stripped, blank ones dropped, duplicates removed in first-seen order.
        return list(dict.fromkeys(tag.strip() for tag in value if tag.strip()))

    def expired(self, now: float | None = None) -> bool:
        """True once the TTL given at `add` time has passed."""
        return self.expires_at is not None and self.expires_at <= (time.time() if now is None else now)

    def to_metadata(self) -> dict[str, Any]:
        """Chroma metadata: everything but id and text, with unset fields and empty tags left out."""
        metadata: dict[str, Any] = {
            "scope": self.scope,
            "kind": self.kind,
            "agent": self.agent,
            "created_at": self.created_at,
        }
        if self.tags:
            metadata["tags"] = list(self.tags)
        for name in _OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is not None:
                metadata[name] = value
        return metadata

    @classmethod
    def from_record(cls, item_id: str, text: str | None, metadata: Mapping[str, Any] | None) -> MemoryItem:
        """Rebuild an item from what Chroma returns for one id."""
        return cls(id=item_id, text=text or "", **dict(metadata or {}))


class RecalledItem(BaseModel):
    """An item returned by recall, with its cosine similarity to the query and its size in tokens."""

    item: MemoryItem
    score: float = Field(ge=-1.0, le=1.0, description="Cosine similarity: 1 - Chroma's cosine distance.")
    tokens: int = Field(ge=0, description="count_text(item.text): what the item costs against a token budget.")
