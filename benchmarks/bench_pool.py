"""Pooled ChatOpenAI vs LangChain's default ChatOpenAI, side by side in one run.

The same ``prompt | llm | StrOutputParser()`` chain, 1000 calls all in flight at once against the
simulator in its own process (100 ms latency). Prints wall time, p50/p99, TCP connections opened
(the simulator's counter) and the ratios.

    .venv/bin/python benchmarks/bench_pool.py [--calls 1000] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio

from rat_langchain import ClientPool, RatConfig
from rat_langchain._demo import default_chain, measure, pooled_chain
from rat_langchain._demo.stats import HEADER, RunSummary, markdown_table, row
from rat_langchain.sim import SimulatorProcess

KEY = "sk-bench"
MODEL = "gpt-4o-mini"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    args = parser.parse_args()
    # The simulator enforces no limits here, so the client's limiter is off; breaker and
    # retries stay on, as a user gets them from pool.chat_model().
    config = RatConfig.from_dict({"performance": {"rate_limiting": {"enabled": False}}})
    with SimulatorProcess(latency_ms=args.latency_ms) as sim:

        def connections() -> int:
            return sim.stats().connections_opened

        async def run() -> list[RunSummary]:
            async with ClientPool(config) as pool:
                n = args.calls
                results = []
                for label, chain in (
                    ("LangChain default ChatOpenAI", default_chain(sim.base_url, KEY, MODEL)),
                    (
                        "rat_langchain pooled ChatOpenAI",
                        pooled_chain(pool, sim.base_url, KEY, MODEL),
                    ),
                ):
                    summary = await measure(
                        f"{label}, cold", chain, requests=n, concurrency=n, connections=connections
                    )
                    print(row(summary), flush=True)
                    results.append(summary)
                    summary = await measure(
                        f"{label}, warm", chain, requests=n, concurrency=n, connections=connections
                    )
                    print(row(summary), flush=True)
                    results.append(summary)
                return results

        print(HEADER)
        results = asyncio.run(run())
    print()
    print(markdown_table(results))
    default_cold, default_warm, pooled_cold, pooled_warm = results
    for kind, base, ours in (
        ("cold", default_cold, pooled_cold),
        ("warm", default_warm, pooled_warm),
    ):
        print(
            f"{kind}: pooled/default throughput {ours.throughput / base.throughput:.2f}x, "
            f"p99 {ours.p99_ms / base.p99_ms:.2f}x, "
            f"TCP connections {base.connections} -> {ours.connections}"
        )


if __name__ == "__main__":
    main()
