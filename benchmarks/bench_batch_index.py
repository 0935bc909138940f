"""Bulk indexing: the synchronous path against OpenAI's Batch API, side by side in one run.

100,000 short documents into a vector store, against the simulator in its own process (20 ms
latency) enforcing 3000 RPM / 5M TPM as a per-minute bucket, its Batch API completing each batch
``--completion`` seconds after creation (OpenAI promises 24 h and often takes minutes; the wall
time of the batch path is that wait plus uploads and downloads, so read it as a floor). Vectors of
256 dimensions (``dimensions=256``, the same for every path) keep the stores in memory small.

(a) rat_langchain ``BatchIndexer`` with defaults, ``mode="online"``, into a FaissStore;
(b) the same with ``mode="batch"``: JSONL files uploaded, batches created, polled, downloaded;
(c) LangChain's ``OpenAIEmbeddings`` into ``InMemoryVectorStore`` (what a user writes by hand).

Requests sent: HTTP requests to the embeddings endpoint, or to the Files and Batch APIs.
Estimated cost: tokens counted offline x the listed price (batch: half).

    .venv/bin/python benchmarks/bench_batch_index.py [--docs 100000] [--completion 5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_openai import OpenAIEmbeddings

from rat_langchain import BatchIndexer, BatchSettings, ClientPool, RatConfig
from rat_langchain.index.batch_api import estimate_cost
from rat_langchain.sim import SimulatorProcess

KEY = "sk-bench"
MODEL = "text-embedding-3-small"
DIMS = 256


def _docs(n: int) -> list[Document]:
    return [
        Document(page_content=f"document {i} about {i % 97} and item {i * 7919 % 1000}", id=str(i))
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--completion", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(_main(args.docs, args.completion))


async def _main(count: int, completion: float) -> None:
    docs = _docs(count)
    rows = [
        f"{count:,} documents, 3000 RPM / 5M TPM per-minute bucket, Batch API completing "
        f"{completion:g} s after creation, {DIMS}-dimension vectors",
        "",
        "| path | requests sent | tokens | est. cost US$ | wall s | stored |",
        "|---|---|---|---|---|---|",
    ]
    with (
        SimulatorProcess(
            latency_ms=20, rpm=3000, tpm=5_000_000, batch_completion_s=completion
        ) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        config = RatConfig.from_dict(
            {"endpoint": {"base_url": sim.base_url, "api_key": KEY}}, env={}
        )
        for mode in ("online", "batch"):
            sim.reset_stats()
            async with ClientPool(config) as pool:
                indexer = BatchIndexer(
                    pool.embeddings(MODEL, dimensions=DIMS),
                    out=Path(tmp) / mode,
                    mode=mode,  # type: ignore[arg-type]
                    batch=BatchSettings(poll_s=0.5, max_poll_s=2.0),
                    progress=False,
                    batch_threshold_tokens=0,
                )
                started = time.perf_counter()
                report = await indexer.aindex(docs)
                wall = time.perf_counter() - started
            stats = sim.stats()
            if mode == "online":
                sent = stats.count("embeddings")
            else:
                sent = stats.count("files") + stats.count("batches")
            tokens = report.tokens if report.tokens is not None else stats.prompt_tokens
            cost = estimate_cost(tokens, MODEL, batch=mode == "batch") or 0.0
            label = f"({'a' if mode == 'online' else 'b'}) BatchIndexer, mode={mode!r}"
            rows.append(
                f"| {label} | {sent:,} | {tokens:,} | {cost:.4f} | {wall:.1f} | {report.added:,} |"
            )
        sim.reset_stats()
        plain = OpenAIEmbeddings(
            model=MODEL,
            base_url=sim.base_url,
            api_key=KEY,  # type: ignore[arg-type]
            check_embedding_ctx_length=False,
            dimensions=DIMS,
        )
        store = InMemoryVectorStore(plain)
        started = time.perf_counter()
        await store.aadd_documents(docs, ids=[str(d.id) for d in docs])
        wall = time.perf_counter() - started
        stats = sim.stats()
        cost = estimate_cost(stats.prompt_tokens, MODEL, batch=False) or 0.0
        rows.append(
            f"| (c) OpenAIEmbeddings into InMemoryVectorStore | {stats.count('embeddings'):,} | "
            f"{stats.prompt_tokens:,} | {cost:.4f} | {wall:.1f} | {len(store.store):,} |"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
