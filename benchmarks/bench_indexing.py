"""Indexing throughput, side by side in one run.

20,000 short documents against the simulator (own process, 100 ms latency) enforcing 6000 RPM over
1 s windows and, in three scenarios, 1.2M TPM (the token limit binds everyone: 20k tokens/s), 6M
TPM (it binds (a) only: the issue's goal of >= 0.9 of the limit and >= 3x (b) at once) or 30M TPM
(it binds nobody: latency, concurrency and the 2 shared cores do):
(a) rat_langchain: PooledOpenAIEmbeddings + FaissStore.afrom_texts with the default settings
    (100 texts a request, 16 requests in flight) and limiter margin 0.95,
(b) langchain-openai OpenAIEmbeddings + langchain-community FAISS.afrom_texts (SDK retries),
(c) one embedding request per document, one after another (the old system), timed on a sample
    of 200 documents because a full run would take over half an hour; its rate is per document.

    .venv/bin/python benchmarks/bench_indexing.py [--docs 20000] [--tpm N ...]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import openai

from rat_langchain import ClientPool, FaissStore, RatConfig
from rat_langchain.sim import SimulatorProcess

KEY = "sk-bench"
MODEL = "text-embedding-3-small"
RPM = 6000
SCENARIOS = (1_200_000, 6_000_000, 30_000_000)


def _docs(n: int) -> list[str]:
    return [
        f"document {i} about subject {i % 97} with detail {i * 31 % 1009} and more"
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--tpm", type=int, action="append", help="TPM scenario (repeatable)")
    args = parser.parse_args()
    for tpm in args.tpm or SCENARIOS:
        print(f"\n{tpm:,} TPM, {RPM} RPM, over 1 s windows")
        run(_docs(args.docs), tpm)
    print(
        "\n'tokens/s vs TPM limit' divides by the run's wall time; the simulator admits a full "
        "window's tokens in each 1 s window a run touches, so a run of a few windows can pass "
        "100% with no 429."
    )


def run(texts: list[str], tpm: int) -> None:
    rows: list[str] = []
    with SimulatorProcess(latency_ms=100, rpm=RPM, tpm=tpm, limit_window_s=1.0) as sim:

        def line(label: str, docs: int, wall: float) -> float:
            stats = sim.stats()
            share = stats.prompt_tokens / wall / (tpm / 60)
            rows.append(
                f"| {label} | {docs} | {wall:.1f} | {docs / wall:.0f} | "
                f"{stats.count('embeddings')} | {stats.count('embeddings', 429)} | {share:.0%} |"
            )
            print(rows[-1], flush=True)
            return share

        config = RatConfig.from_dict(
            {
                "performance": {
                    "rate_limiting": {
                        "rpm_limit": RPM,
                        "tpm_limit": tpm,
                        "burst_s": 1.0,
                        "first_hold_s": 1.0,
                        "safety_margin": 0.95,
                    },
                }
            },
            env={},
        )

        async def ours() -> float:
            async with ClientPool(config) as pool:
                start = time.perf_counter()
                store = await FaissStore.afrom_texts(
                    texts, pool.embeddings(MODEL, base_url=sim.base_url, api_key=KEY)
                )
                wall = time.perf_counter() - start
                assert len(store) == len(texts)
                return wall

        async def langchain() -> float:
            from langchain_community.vectorstores import FAISS
            from langchain_openai import OpenAIEmbeddings

            emb = OpenAIEmbeddings(
                model=MODEL,
                base_url=sim.base_url,
                api_key=KEY,
                check_embedding_ctx_length=False,  # type: ignore[arg-type]
            )
            start = time.perf_counter()
            store = await FAISS.afrom_texts(texts, emb)
            wall = time.perf_counter() - start
            # langchain-openai never closes the clients it creates; closed here, on their loop,
            # so the next run does not print their transports' errors
            await emb.async_client._client.close()
            assert store.index.ntotal == len(texts)
            return wall

        async def one_by_one(sample: int) -> float:
            async with openai.AsyncOpenAI(base_url=sim.base_url, api_key=KEY) as client:
                start = time.perf_counter()
                for text in texts[:sample]:
                    await client.embeddings.create(model=MODEL, input=text)
                return time.perf_counter() - start

        print("| run | docs | wall s | docs/s | requests | 429s | tokens/s vs TPM limit |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        sim.reset_stats()
        wall_a = asyncio.run(ours())
        share_a = line("(a) rat_langchain", len(texts), wall_a)
        sim.reset_stats()
        wall_b = asyncio.run(langchain())
        line("(b) OpenAIEmbeddings + community FAISS", len(texts), wall_b)
        sim.reset_stats()
        sample = min(200, len(texts))
        wall_c = asyncio.run(one_by_one(sample))
        line("(c) one request per document (sample)", sample, wall_c)
    a, b, c = len(texts) / wall_a, len(texts) / wall_b, sample / wall_c
    print(f"a/b = {a / b:.2f}x, a/c = {a / c:.1f}x docs/s; a used {share_a:.0%} of the TPM limit")


if __name__ == "__main__":
    main()
