"""``rat-langchain demo``: the same LangChain chat chain, pooled vs LangChain's default client.

It starts the simulator in its own process (so the server does not share the client's event loop),
sends waves of concurrent requests through ``prompt | llm | StrOutputParser()`` and prints one
table: requests, wall time, p50/p95/p99, TCP connections opened (the simulator's counter) and reuse.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI

from rat_langchain._demo.stats import HEADER, RunSummary, row
from rat_langchain.config import RatConfig
from rat_langchain.pool.pool import ClientPool
from rat_langchain.sim import SimulatorProcess

_PROMPT = ChatPromptTemplate.from_messages(
    [("system", "You are a terse assistant."), ("user", "Summarise topic {i} in one line.")]
)


async def measure(
    label: str,
    chain: Runnable[dict[str, Any], str],
    *,
    requests: int,
    concurrency: int,
    connections: Callable[[], int | None],
) -> RunSummary:
    """Send ``requests`` through ``chain``, ``concurrency`` at a time, timing each one."""
    once = await _measure_once(
        chain, requests=requests, concurrency=concurrency, connections=connections
    )
    return RunSummary.combined(label, [once])


async def _measure_once(
    chain: Runnable[dict[str, Any], str],
    *,
    requests: int,
    concurrency: int,
    connections: Callable[[], int | None],
) -> tuple[list[float], int, float, int]:
    """Latencies, errors, wall seconds and connections opened of one run."""
    gc.collect()  # a run does not pay for the garbage of the one before it
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors = 0
    before = connections()

    async def one(i: int) -> None:
        nonlocal errors
        async with gate:
            start = time.perf_counter()
            try:
                await chain.ainvoke({"i": i})
            except Exception:  # a demo reports failures instead of stopping at the first
                errors += 1
                return
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for i in range(requests):
            tg.create_task(one(i))
    wall = time.perf_counter() - start
    after = connections()
    opened = -1 if before is None or after is None else after - before
    return latencies, errors, wall, opened


def default_chain(base_url: str | None, api_key: str, model: str) -> Runnable[dict[str, Any], str]:
    """What a user writes without rat_langchain (with a timeout, which the default lacks)."""
    llm = ChatOpenAI(model=model, base_url=base_url, api_key=api_key, timeout=120)
    return _PROMPT | llm | StrOutputParser()


def pooled_chain(
    pool: ClientPool, base_url: str | None, api_key: str, model: str
) -> Runnable[dict[str, Any], str]:
    llm = pool.chat_model(model=model, base_url=base_url, api_key=api_key)
    return _PROMPT | llm | StrOutputParser()


@contextlib.contextmanager
def _endpoint(
    args: argparse.Namespace,
) -> Iterator[tuple[str | None, str, SimulatorProcess | None]]:
    if args.real:
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise SystemExit("--real needs OPENAI_API_KEY (and optionally OPENAI_BASE_URL)")
        yield os.environ.get("OPENAI_BASE_URL"), key, None
        return
    with SimulatorProcess(latency_ms=args.latency_ms, jitter_ms=args.latency_ms / 5) as sim:
        yield sim.base_url, "sk-demo-simulated", sim


def run_demo(args: argparse.Namespace) -> int:
    config = RatConfig.load(args.config) if args.config else RatConfig.load()
    model = args.model or config.endpoint.chat_model
    with _endpoint(args) as (base_url, key, sim):
        if sim is not None:
            # This part measures pooling; the simulator enforces no limits here, so neither does
            # the client (the resilience part below turns both on).
            config = config.model_copy(deep=True)
            config.performance.rate_limiting.enabled = False
        _pooling_part(args, config, model, base_url, key, sim)
        if sim is not None and not args.skip_resilience:
            from rat_langchain._demo.index import index_part

            index_part(sim, model)
            from rat_langchain._demo.plan import plan_part

            plan_part(sim, model)
            from rat_langchain._demo.e2e import KEY, Target, e2e_part

            e2e_part(Target(sim.base_url, KEY, sim), model)
            from rat_langchain._demo.resilience import resilience_part

            resilience_part(sim, model, args.resilience_calls)
        elif sim is None and not args.skip_resilience:
            from rat_langchain._demo.e2e import Target, e2e_part

            e2e_part(Target(base_url, key, config=config), model)  # the real endpoint
    return 0


def _pooling_part(
    args: argparse.Namespace,
    config: RatConfig,
    model: str,
    base_url: str | None,
    key: str,
    sim: SimulatorProcess | None,
) -> None:
    def connections() -> int | None:
        return sim.stats().connections_opened if sim is not None else None

    where = "the embedded simulator" if sim else (base_url or "api.openai.com")
    print(f"rat_langchain demo: prompt | ChatOpenAI | StrOutputParser against {where}")
    if sim:
        print(f"simulator: {args.latency_ms:.0f} ms latency, in its own process at {sim.url}")
    limit = config.performance.connection_pooling.max_connections
    print(f"pool: transport {ClientPool(config).transport}, max_connections {limit}\n")

    async def main() -> list[tuple[RunSummary, RunSummary]]:
        pairs = []
        async with ClientPool(config) as pool:
            pooled = pooled_chain(pool, base_url, key, model)
            default = default_chain(base_url, key, model)
            print(HEADER)
            for concurrency in args.concurrency:
                n = 2 * concurrency  # two waves: the second shows whether sockets are reused
                label = f"{concurrency} at a time"
                chains = {"default": default, "pooled": pooled}
                # each client runs twice, in the order default, pooled, pooled, default: a run
                # of a second or less moves by a tenth of one from run to run on a busy machine,
                # and whichever went second would pay for what the first left behind
                done: dict[str, list[tuple[list[float], int, float, int]]] = {}
                for name in ("default", "pooled", "pooled", "default"):
                    one = await _measure_once(
                        chains[name], requests=n, concurrency=concurrency, connections=connections
                    )
                    done.setdefault(name, []).append(one)
                base = RunSummary.combined(f"LangChain default, {label}", done["default"])
                ours = RunSummary.combined(f"rat_langchain pooled, {label}", done["pooled"])
                print(row(base), flush=True)
                print(row(ours), flush=True)
                pairs.append((base, ours))
        return pairs

    pairs = asyncio.run(main())
    print()
    for base, ours in pairs:
        speed = ours.throughput / base.throughput if base.throughput else float("nan")
        conns = f", TCP connections {base.connections} -> {ours.connections}" if sim else ""
        print(
            f"{ours.label.split(', ')[1]}: pooled is {speed:.2f}x the default's throughput{conns}"
        )
    print(
        "Each row is two runs of that client (order: default, pooled, pooled, default); the "
        "pool stays warm across rows, as in a long-running service; -1 = not measurable."
    )
