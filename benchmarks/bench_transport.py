"""Which HTTP transport should the pooled openai client use? Measured, not assumed.

Raw ``openai.AsyncOpenAI`` chat calls against the simulator (in its own process, 100 ms latency),
through each transport with the same limits (100 connections, keep-alive 100), at 1, 64 and 1000
concurrent calls. Prints calls/s, p50/p99 and TCP connections opened (the simulator's counter).

    .venv/bin/python benchmarks/bench_transport.py [--latency-ms 100] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import openai

from rat_langchain._demo.stats import HEADER, RunSummary, markdown_table, row
from rat_langchain.pool import _http
from rat_langchain.sim import SimulatorProcess

TRANSPORTS: tuple[_http.Transport, ...] = ("sdk", "aiohttp", "httpx")


async def _run(
    base_url: str, transport: _http.Transport, concurrency: int, calls: int
) -> tuple[list[float], int, float]:
    settings = _http.HttpSettings(transport, 100, 100, 60.0, 10.0, 120.0)
    client = openai.AsyncOpenAI(
        base_url=base_url,
        api_key="sk-bench",
        max_retries=0,
        http_client=_http.per_loop_client(settings),
    )
    latencies: list[float] = []
    errors = 0
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        nonlocal errors
        async with gate:
            start = time.perf_counter()
            try:
                await client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"question {i}"}]
                )
                latencies.append(time.perf_counter() - start)
            except openai.OpenAIError:
                errors += 1

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for i in range(calls):
            tg.create_task(one(i))
    wall = time.perf_counter() - start
    await client.close()
    return latencies, errors, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--quick", action="store_true", help="fewer calls per run")
    args = parser.parse_args()
    plan = [
        (1, 10 if args.quick else 30),
        (64, 256 if args.quick else 640),
        (1000, 1000 if args.quick else 3000),
    ]
    results: list[RunSummary] = []
    with SimulatorProcess(latency_ms=args.latency_ms) as sim:
        print(HEADER)
        for concurrency, calls in plan:
            for transport in TRANSPORTS:
                sim.reset_stats()
                latencies, errors, wall = asyncio.run(
                    _run(sim.base_url, transport, concurrency, calls)
                )
                summary = RunSummary.of(
                    f"{transport} x{concurrency}",
                    latencies,
                    errors,
                    wall,
                    sim.stats().connections_opened,
                )
                results.append(summary)
                print(row(summary), flush=True)
    print()
    print(markdown_table(results))
    by = {s.label: s for s in results}
    for concurrency, _ in plan:
        base = by[f"httpx x{concurrency}"].throughput
        ratios = ", ".join(
            f"{t} {by[f'{t} x{concurrency}'].throughput / base:.2f}x" for t in TRANSPORTS
        )
        print(f"throughput vs plain httpx at {concurrency} concurrent: {ratios}")


if __name__ == "__main__":
    main()
