"""The on-disk response cache under the meter: autogen's ``ChatCompletionCache`` on a ``diskcache.Cache``.

Replies are masked (`huddle.secrets`) before they are written: the meter masks what an agent keeps, but the cache
sits below it and stored a reply that repeated a key unmasked in ``<data dir>/cache``. A cache folder that cannot be
opened (read-only, a file in its place) is one `StorageError` naming it, not a diskcache or sqlite3 traceback.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from autogen_core.models import ChatCompletionClient, CreateResult
from autogen_ext.cache_store.diskcache import DiskCacheStore
from autogen_ext.models.cache import CHAT_CACHE_VALUE_TYPE, ChatCompletionCache
from diskcache import Cache

from huddle.config.settings import ModelProfile
from huddle.models.masking import masked
from huddle.secrets import StreamRedactor
from huddle.storage.sqlite import StorageError


class _MaskedStore(DiskCacheStore[CHAT_CACHE_VALUE_TYPE]):
    """A diskcache store that masks every reply before it reaches the disk."""

    def set(self, key: str, value: CHAT_CACHE_VALUE_TYPE) -> None:
        super().set(key, _masked_value(value))


def _masked_value(value: CHAT_CACHE_VALUE_TYPE) -> CHAT_CACHE_VALUE_TYPE:
    """A reply (`CreateResult`) or a stream's chunks and final result, masked; a key split across chunks too."""
    if isinstance(value, CreateResult):
        return masked(value)
    if not isinstance(value, list):
        return value
    redactor, items = StreamRedactor(), list[str | CreateResult]()
    for item in value:
        text = redactor.feed(item) if isinstance(item, str) else redactor.flush()
        if text:
            items.append(text)
        if isinstance(item, CreateResult):
            items.append(masked(item))
    if tail := redactor.flush():
        items.append(tail)
    return items


class _DiskCachedClient(ChatCompletionCache):
    """autogen's response cache on a ``diskcache.Cache`` that is closed with the client (autogen's closes only the
    client it wraps, leaving the cache's SQLite connection open for the life of the process)."""

    def __init__(self, client: ChatCompletionClient, cache: Cache) -> None:
        super().__init__(client, _MaskedStore(cache))
        self._disk = cache

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self._disk.close()


def cached(client: ChatCompletionClient, profile: ModelProfile, cache_dir: Path) -> ChatCompletionClient:
    """Wrap `client` in a disk cache of its own: autogen's cache key leaves out the model, so one folder per model."""
    key = hashlib.sha256(f"{profile.provider}|{profile.base_url}|{profile.model_name}".encode()).hexdigest()[:16]
    try:
        disk = Cache(str(cache_dir / key))
    except (OSError, sqlite3.Error) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise StorageError(
            f"the response cache cannot be opened in {cache_dir} ({reason}); make it a writable folder, "
            "choose another --data-dir, or run with --no-cache"
        ) from None
    return _DiskCachedClient(client, disk)
