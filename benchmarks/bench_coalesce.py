"""Embedding calls coalesced: a served RAG app's queries, one ``aembed_query`` per user.

The simulator in its own process enforces 5000 RPM / 5M TPM per second (83 requests a second,
no burst beyond it), 100 ms a request. 1000 queries at once, then 5 at a time (p50 latency),
through (a) the pool's embeddings with coalescing (the default), (b) the same with
``batch_embeddings.coalesce: false`` (one request per query), (c) LangChain's
``OpenAIEmbeddings`` with its defaults. Columns: time, calls failed, the server's 429s, requests
the server answered. The goal (issue 22): 1000 at once with 0 errors and 0 429s in under 3.3 s
(4x faster than one query per request allows), and at 5 at a time a p50 within 5 % of (b).

    .venv/bin/python benchmarks/bench_coalesce.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from langchain_openai import OpenAIEmbeddings

from rat_langchain import ClientPool, RatConfig
from rat_langchain.sim import SimulatorProcess

KEY = "sk-bench"
MODEL = "text-embedding-3-small"


def _pool(sim: SimulatorProcess, coalesce: bool) -> ClientPool:
    return ClientPool(
        RatConfig.from_dict(
            {
                "endpoint": {"base_url": sim.base_url, "api_key": KEY},
                "performance": {"batch_embeddings": {"coalesce": coalesce}},
            },
            env={},
        )
    )


async def _burst(embed: Callable[[str], Any], n: int) -> tuple[float, int]:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(embed(f"question {i} about item {i * 31 % 97}") for i in range(n)),
        return_exceptions=True,
    )
    return time.perf_counter() - started, sum(isinstance(r, BaseException) for r in results)


async def _p50(embed: Callable[[str], Any], concurrent: int, calls: int) -> float:
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrent)

    async def one(i: int) -> None:
        async with gate:
            started = time.perf_counter()
            await embed(f"user question number {i}")
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(one(i) for i in range(calls)))
    return statistics.median(latencies)


async def _main() -> None:
    settings = {"latency_ms": 100, "rpm": 5000, "tpm": 5_000_000, "limit_window_s": 1.0}
    print(__doc__.split("\n\n")[1].replace("\n", " "))
    print()
    print("| client | 1000 at once (s) | failed | 429s | requests | p50 at 5 at a time (ms) |")
    print("|---|---|---|---|---|---|")
    with SimulatorProcess(**settings) as sim:
        for name, coalesce in (("(a) pool, coalesced", True), ("(b) pool, coalesce off", False)):
            sim.reset_stats()
            async with _pool(sim, coalesce) as pool:
                emb = pool.embeddings(MODEL)
                await emb.aembed_query("warm up")
                sim.reset_stats()
                took, failed = await _burst(emb.aembed_query, 1000)
                stats = sim.stats()
                p50 = await _p50(emb.aembed_query, 5, 200)
            print(
                f"| {name} | {took:.2f} | {failed} | {stats.count('embeddings', 429)} | "
                f"{stats.count('embeddings', 200)} | {p50 * 1000:.0f} |"
            )
            await asyncio.sleep(1.1)  # the server's window empties between clients
        plain = OpenAIEmbeddings(
            model=MODEL, base_url=sim.base_url, api_key=KEY, check_embedding_ctx_length=False
        )  # type: ignore[call-arg]
        await plain.aembed_query("warm up")
        sim.reset_stats()
        took, failed = await _burst(plain.aembed_query, 1000)
        stats = sim.stats()
        await asyncio.sleep(1.1)
        p50 = await _p50(plain.aembed_query, 5, 200)
        print(
            f"| (c) OpenAIEmbeddings, defaults | {took:.2f} | {failed} | "
            f"{stats.count('embeddings', 429)} | {stats.count('embeddings', 200)} | "
            f"{p50 * 1000:.0f} |"
        )


def main() -> None:
    asyncio.run(_main())


if __name__ == "__main__":
    main()
