"""MemoryStore at 10^5 users (issue 33, item 4): one FaissStore partitioned by user against the
previous design, a FaissStore per user (rebuilt here as it was), each in a process of its own.

Per design: the resident memory the users add (RSS after, less before), the write latency of
one memory (``add_memory``), the search latency of one user's memories, and an upsert (the same
id written again), median and p99. The embeddings are a fixed table of vectors looked up by
text, so the figures are the store's, not a model's or a server's.

    .venv/bin/python benchmarks/bench_memory.py [--users 100000] [--dim 1536]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from rat_langchain import FaissStore, MemoryStore


class _Table(Embeddings):
    """A vector per text from a fixed random table: microseconds, no model."""

    def __init__(self, dim: int) -> None:
        self.rows = np.random.default_rng(0).standard_normal((4096, dim)).astype(np.float32)

    def _row(self, text: str) -> list[float]:
        return self.rows[hash(text) % len(self.rows)].tolist()  # type: ignore[no-any-return]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._row(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._row(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        return self.embed_query(text)


class _PerUser:
    """The previous design: a FaissStore of its own for every user."""

    def __init__(self, embedding: Embeddings) -> None:
        self.embedding = embedding
        self.stores: dict[str, FaissStore] = {}

    async def add_memory(self, user: str, text: str, memory_id: str | None = None) -> None:
        store = self.stores.get(user)
        if store is None:
            store = self.stores[user] = FaissStore(self.embedding)
        await store.aadd_texts([text], ids=[memory_id] if memory_id else None)

    async def search(self, user: str, query: str) -> Any:
        return await self.stores[user].asimilarity_search(query, k=4)


class _Shared:
    def __init__(self, embedding: Embeddings) -> None:
        self.memory = MemoryStore(embedding)

    async def add_memory(self, user: str, text: str, memory_id: str | None = None) -> None:
        await self.memory.add_memories_batch(user, [text], ids=[memory_id] if memory_id else None)

    async def search(self, user: str, query: str) -> Any:
        return await self.memory.search_memories(user, query, k=4)


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * 4096 / 2**20


def _stats(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "median_us": statistics.median(samples) * 1e6,
        "p99_us": samples[int(0.99 * (len(samples) - 1))] * 1e6,
    }


async def _measure(design: str, users: int, dim: int) -> dict[str, Any]:
    embedding = _Table(dim)
    store: Any = _Shared(embedding) if design == "shared" else _PerUser(embedding)
    before = _rss_mb()
    writes: list[float] = []
    for u in range(users):
        start = time.perf_counter()
        await store.add_memory(f"user-{u}", f"memory of user {u}", "m0")
        writes.append(time.perf_counter() - start)
    rss = _rss_mb() - before
    rng = random.Random(1)
    searches, upserts = [], []
    for _ in range(2000):
        user = f"user-{rng.randrange(users)}"
        start = time.perf_counter()
        await store.search(user, "what do they like?")
        searches.append(time.perf_counter() - start)
    for _ in range(200):
        u = rng.randrange(users)
        start = time.perf_counter()
        await store.add_memory(f"user-{u}", f"memory of user {u}, again", "m0")
        upserts.append(time.perf_counter() - start)
    return {
        "design": design,
        "users": users,
        "rss_mb": rss,
        "kb_per_user": rss * 1024 / users,
        "write": _stats(writes),
        "search": _stats(searches),
        "upsert": _stats(upserts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--design", choices=["shared", "per_user"])
    args = parser.parse_args()
    if args.design:  # a child: one design, one process
        print(json.dumps(asyncio.run(_measure(args.design, args.users, args.dim))))
        return
    print(
        f"MemoryStore, {args.users} users with one memory each, {args.dim}-dim vectors; each "
        "design in a process of its own; latencies over 2000 searches of random users and "
        "200 upserts (the same memory id written again)\n"
    )
    print(
        "| design | RSS added | per user | write median / p99 | search median / p99 "
        "| upsert median / p99 |"
    )
    print("|---|---|---|---|---|---|")
    for design, label in (("per_user", "a FaissStore per user (before)"), ("shared", "one store")):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--design",
                design,
                "--users",
                str(args.users),
                "--dim",
                str(args.dim),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        w, s, u = r["write"], r["search"], r["upsert"]
        print(
            f"| {label} | {r['rss_mb']:.0f} MB | {r['kb_per_user']:.1f} KB "
            f"| {w['median_us']:.0f} / {w['p99_us']:.0f} us "
            f"| {s['median_us']:.0f} / {s['p99_us']:.0f} us "
            f"| {u['median_us']:.0f} / {u['p99_us']:.0f} us |",
            flush=True,
        )


if __name__ == "__main__":
    main()
