"""Zero configuration: what a new user gets, with nothing configured but the endpoint.

The server kinds of issue 12, each played by the simulator in its own process (20 ms latency):
a per-second quantised limit (600 RPM as 10 per second), a token limit enforced per second,
Azure-style fixed 10 s windows and headers, a server with no rate-limit headers and no
Retry-After, a limit that halves mid-run, and a server announcing limits far above the ones it
enforces (per second and per minute); then a per-minute bucket with a generous limit,
where embedding documents should run near it. Each against (a) rat_langchain with its defaults,
(b) LangChain's default ``ChatOpenAI`` / ``OpenAIEmbeddings`` (the SDK's 2 retries), (c) a
hand-tuned ``InMemoryRateLimiter`` at the server's rate (what a careful user writes by hand).

Columns: calls that failed for the caller, the share of the server's responses that were 429,
and goodput (successful calls per second over the enforced rate; for embeddings, documents per
second over what the limit allows). Goodput means something only where nothing failed: a client
whose calls mostly failed finished early, and its few successes over that short run can exceed
the limit's rate.

    .venv/bin/python benchmarks/bench_zero_config.py [--docs 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from langchain_core.documents import Document
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from benchmarks._drive import drive
from rat_langchain import BatchIndexer, ClientPool, RatConfig
from rat_langchain.sim import SimulatorProcess

KEY = "sk-bench"
MODEL = "gpt-4o-mini"


def _prompt(i: int, tokens: int) -> str:
    return " ".join(f"w{i}x{j}" for j in range(max(1, tokens // 3)))


_POOLS: list[ClientPool] = []


def _pool(sim: SimulatorProcess) -> ClientPool:
    """A pool with nothing configured but the endpoint; closed after its client's run."""
    config = RatConfig.from_dict({"endpoint": {"base_url": sim.base_url, "api_key": KEY}}, env={})
    _POOLS.append(ClientPool(config))
    return _POOLS[-1]


async def _close_pools() -> None:
    while _POOLS:
        await _POOLS.pop().aclose()


def _clients(sim: SimulatorProcess, rps: float) -> dict[str, Callable[[], Any]]:
    def rat() -> Any:
        return _pool(sim).chat_model(model=MODEL, max_tokens=20)

    def plain() -> Any:
        return ChatOpenAI(model=MODEL, base_url=sim.base_url, api_key=KEY, max_tokens=20)

    def tuned() -> Any:
        limiter = InMemoryRateLimiter(
            requests_per_second=rps * 0.95, check_every_n_seconds=0.005, max_bucket_size=1
        )
        return ChatOpenAI(
            model=MODEL, base_url=sim.base_url, api_key=KEY, max_tokens=20, rate_limiter=limiter
        )

    return {
        "(a) rat_langchain, defaults": rat,
        "(b) ChatOpenAI, defaults": plain,
        "(c) ChatOpenAI + hand-tuned InMemoryRateLimiter": tuned,
    }


async def chat_scenario(
    title: str,
    settings: dict[str, Any],
    *,
    calls: int,
    concurrency: int,
    rps: float,
    prompt_tokens: Callable[[int], int] = lambda i: 8,
    tpm: int | None = None,
    during: Callable[[], Callable[[SimulatorProcess, float], None]] | None = None,
) -> list[str]:
    """``during()`` makes, for each client's run, a hook called before each call with the
    seconds since the run started (to change the server mid-run)."""
    rows = [f"\n{title}\n", "| client | failed | 429 share | goodput |", "|---|---|---|---|"]
    with SimulatorProcess(**{"latency_ms": 20, **settings}) as sim:
        for label, make in _clients(sim, rps).items():
            sim.configure(**settings)  # a fresh server state for each client
            sim.reset_stats()
            model = make()

            hook = during() if during is not None else None

            async def run(model: Any = model, hook: Any = hook) -> tuple[int, float]:
                started = time.perf_counter()

                async def call(i: int) -> Any:
                    if hook is not None:
                        hook(sim, time.perf_counter() - started)
                    return await model.ainvoke(_prompt(i, prompt_tokens(i)))

                return await drive(calls, concurrency, call)

            ok, wall = await run()
            await _close_pools()
            stats = sim.stats()
            answered = stats.count("chat")
            share = stats.count("chat", 429) / answered if answered else 0.0
            if tpm is None:
                goodput = ok / wall / rps
            else:  # tokens the server billed for answered calls, over what its limit allows
                billed = stats.prompt_tokens + stats.completion_tokens
                goodput = billed / wall / (tpm / 60)
            rows.append(f"| {label} | {calls - ok} | {share:.1%} | {goodput:.2f} |")
    return rows


async def embedding_scenario(docs: int) -> list[str]:
    """The acceptance's job, documents embedded *and indexed*: (a) ``BatchIndexer`` on the
    pool's embeddings into a ``FaissStore`` (float32 end to end), (b) LangChain's
    ``InMemoryVectorStore`` on ``OpenAIEmbeddings``. Then both through LangChain's
    ``aembed_documents``, whose answer is 20,000 x 1536 Python floats: building those lists
    costs about 1.5 s of this machine's CPU whoever calls it."""
    rpm, tpm = 3000, 5_000_000
    texts = [f"document {i} about topic {i % 97} and item {i * 7919 % 1000}" for i in range(docs)]
    rows = [
        f"\nPer-minute bucket, {rpm} RPM / {tpm:,} TPM (a full minute of burst): {docs:,} short "
        "documents embedded and indexed, from a cold start (first request, tokenizer tables)",
        "",
        "| client | failed | 429 share | docs/s | share of the limit |",
        "|---|---|---|---|---|",
    ]
    model = "text-embedding-3-small"

    def plain() -> OpenAIEmbeddings:
        return OpenAIEmbeddings(
            model=model,
            base_url=sim.base_url,
            api_key=KEY,  # type: ignore[arg-type]
            check_embedding_ctx_length=False,
        )

    async def index_rat() -> None:
        indexer = BatchIndexer(_pool(sim).embeddings(model), progress=False)
        report = await indexer.aindex(
            Document(page_content=t, id=str(i)) for i, t in enumerate(texts)
        )
        assert report.added == docs, report

    async def index_plain() -> None:
        await InMemoryVectorStore(plain()).aadd_texts(texts, ids=[str(i) for i in range(docs)])

    async def lists_rat() -> None:
        await _pool(sim).embeddings(model).aembed_documents(texts)

    async def lists_plain() -> None:
        await plain().aembed_documents(texts)

    with SimulatorProcess(latency_ms=20, rpm=rpm, tpm=tpm) as sim:
        tokens_per_doc = 17  # as the simulator counts these texts, about
        allowed = min(rpm * 100, tpm / tokens_per_doc) / 60  # docs/s the limit allows
        jobs: dict[str, Callable[[], Any]] = {
            "(a) rat_langchain defaults: BatchIndexer into FaissStore": index_rat,
            "(b) OpenAIEmbeddings defaults into InMemoryVectorStore": index_plain,
            "(a) rat_langchain defaults: aembed_documents (lists)": lists_rat,
            "(b) OpenAIEmbeddings defaults: aembed_documents (lists)": lists_plain,
        }
        for label, job in jobs.items():
            sim.configure(rpm=rpm, tpm=tpm)  # a fresh server state for each client
            sim.reset_stats()
            started = time.perf_counter()
            failed = 0
            try:
                await job()
            except Exception:
                failed = docs
            wall = time.perf_counter() - started
            await _close_pools()
            stats = sim.stats()
            answered = stats.count("embeddings")
            share = stats.count("embeddings", 429) / answered if answered else 0.0
            rate = (docs - failed) / wall
            rows.append(f"| {label} | {failed} | {share:.1%} | {rate:.0f} | {rate / allowed:.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=20_000)
    args = parser.parse_args()
    # One event loop for the whole run: LangChain's default clients are cached per process and
    # bound to the first loop that used them, so a second asyncio.run would fail (b) and (c)
    # with "Event loop is closed" rather than measure them.
    asyncio.run(_main(args.docs))


async def _main(docs: int) -> None:
    rng = random.Random(7)
    sizes = [rng.randint(50, 600) for _ in range(150)]

    def halving() -> Callable[[SimulatorProcess, float], None]:
        done = [False]

        def halve(sim: SimulatorProcess, elapsed: float) -> None:
            if elapsed > 5.0 and not done[0]:
                done[0] = True
                sim.configure(rpm=600)

        return halve

    print("Zero configuration: nothing set but the endpoint (issue 12's scenarios)")
    out: list[str] = []
    out += await chat_scenario(
        "600 RPM enforced per second (10/s), 200 chats 100 at a time",
        {"rpm": 600, "limit_window_s": 1.0},
        calls=200,
        concurrency=100,
        rps=10.0,
    )
    out += await chat_scenario(
        "300k TPM enforced per second, prompts of 50-600 tokens, 150 chats 50 at a time "
        "(goodput: tokens the server billed per second over the limit)",
        {"tpm": 300_000, "limit_window_s": 1.0},
        calls=150,
        concurrency=50,
        rps=300_000 / 60 / (sum(sizes) / len(sizes) + 20),
        tpm=300_000,
        prompt_tokens=lambda i: sizes[i % len(sizes)],
    )
    out += await chat_scenario(
        "Azure-style: 600 RPM over fixed 10 s windows, Azure headers, 300 chats 100 at a time",
        {
            "rpm": 600,
            "limit_window_s": 10.0,
            "limit_style": "fixed_window",
            "limit_headers": "azure",
        },
        calls=300,
        concurrency=100,
        rps=10.0,
    )
    out += await chat_scenario(
        "No rate-limit headers and no Retry-After, 600 RPM per second, 300 chats 100 at a time",
        {"rpm": 600, "limit_window_s": 1.0, "limit_headers": "none", "retry_after": False},
        calls=300,
        concurrency=100,
        rps=10.0,
    )
    out += await chat_scenario(
        "A server that counts requests in flight (a self-hosted model's queue): at most 8 "
        "answered at once, 200 ms each, no headers, no Retry-After; 200 chats 50 at a time "
        "(goodput over 8 / 0.2 s = 40 calls/s)",
        {"max_in_flight": 8, "latency_ms": 200, "limit_headers": "none", "retry_after": False},
        calls=200,
        concurrency=50,
        rps=40.0,
    )
    out += await chat_scenario(
        "The limit halves mid-run: 1200 RPM per second, 600 after 5 s, 300 chats 100 at a time "
        "(goodput over 600 RPM)",
        {"rpm": 1200, "limit_window_s": 1.0},
        calls=300,
        concurrency=100,
        rps=10.0,
        during=halving,
    )
    out += await chat_scenario(
        "Announces 10^9 RPM / TPM (an organisation's limit) and enforces 3000 RPM per second "
        "(a project's, 50/s), 600 chats 100 at a time",
        {
            "rpm": 3000,
            "limit_window_s": 1.0,
            "announced_rpm": 10**9,
            "tpm": 10**8,
            "announced_tpm": 10**9,
        },
        calls=600,
        concurrency=100,
        rps=50.0,
    )
    out += await chat_scenario(
        "Announces 10^9 RPM / TPM and enforces 600 RPM as a per-minute bucket, 800 chats 100 "
        "at a time (goodput over 10/s; the bucket's first minute lets 600 go at once)",
        {"rpm": 600, "announced_rpm": 10**9, "tpm": 10**8, "announced_tpm": 10**9},
        calls=800,
        concurrency=100,
        rps=10.0,
    )
    out += await embedding_scenario(docs)
    print("\n".join(out))


if __name__ == "__main__":
    main()
