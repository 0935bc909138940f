"""Several worker processes calling one endpoint with one API key: do they stay under its quota?

Used by ``benchmarks/bench_shared_limiter.py`` and the Redis acceptance test. Each worker is a
separate process with its own ClientPool and limiter (local, or backed by one Redis); they start
together on a multiprocessing event and call the chat model as fast as their limiter allows for
a fixed time. The simulator's counters say how many requests it answered and how many with 429.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rat_langchain.config import RatConfig
from rat_langchain.guards.redis.limiter import RedisRateLimiter
from rat_langchain.pool.pool import ClientPool

KEY = "sk-quota-run"


@dataclass
class QuotaRun:
    backend: str
    workers: int
    seconds: float
    ok: int
    failed: int
    answered: int
    throttled: int
    rpm: int

    wall_s: float
    window_s: float
    outages: tuple[int, ...] = ()  # per worker: times its limiter lost Redis
    degraded_at_end: tuple[bool, ...] = ()  # per worker: still on local buckets at the end

    @property
    def allowed(self) -> float:
        """What the server admits over the run: its burst (``window_s`` worth of the limit)
        plus the limit's rate over the wall time (first request of any worker to the last)."""
        return self.rpm / 60 * (self.window_s + self.wall_s)

    @property
    def share_of_limit(self) -> float:
        """Successful requests as a share of what the server would admit."""
        return self.ok / self.allowed

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.answered if self.answered else 0.0


def _config(
    backend: str, redis_url: str, rpm: int, burst_s: float, retries: bool = False
) -> RatConfig:
    return RatConfig.from_dict(
        {
            "performance": {
                "rate_limiting": {
                    "backend": backend,
                    "redis_url": redis_url,
                    "rpm_limit": rpm,
                    "tpm_limit": 100_000_000,
                    "burst_s": burst_s,
                    "first_hold_s": 0,
                },
                "retries": {"enabled": retries},  # off: a 429 must show, not be retried away
                "circuit_breaker": {"enabled": False},
            }
        },
        env={},
    )


def _worker(
    base_url: str,
    redis_url: str,
    backend: str,
    rpm: int,
    burst_s: float,
    seconds: float,
    concurrency: int,
    retries: bool,
    start: Any,
    results: Any,
) -> None:
    async def main() -> tuple[int, int, float, float, int, bool]:
        ok = failed = 0
        last = 0.0
        async with ClientPool(_config(backend, redis_url, rpm, burst_s, retries)) as pool:
            llm = pool.chat_model(model="gpt-4o-mini", base_url=base_url, api_key=KEY, max_tokens=5)
            for _ in range(100):  # connections and imports before the clock starts
                try:
                    await llm.ainvoke("warm up")
                    break
                except Exception:  # the server's window may still be full from a previous run
                    await asyncio.sleep(0.1)
            start.wait()
            first = time.monotonic()
            deadline = first + seconds

            async def loop() -> None:
                nonlocal ok, failed, last
                while time.monotonic() < deadline:
                    try:
                        await llm.ainvoke("hi")
                        ok += 1
                    except Exception:
                        failed += 1
                    last = max(last, time.monotonic())

            async with asyncio.TaskGroup() as tg:
                for _ in range(concurrency):
                    tg.create_task(loop())
            limiter = pool.limiter
            outages, degraded = 0, False
            if isinstance(limiter, RedisRateLimiter):
                await llm.ainvoke("after the run")  # one more call: has Redis come back?
                outages, degraded = limiter.outages, limiter.degraded
        return ok, failed, first, last, outages, degraded

    results.put(asyncio.run(main()))


def run(
    sim: Any,
    *,
    backend: str,
    redis_url: str = "redis://127.0.0.1:6379/0",
    workers: int = 4,
    seconds: float = 5.0,
    rpm: int = 1200,
    burst_s: float = 1.0,
    concurrency: int = 8,
    events: Sequence[tuple[float, Callable[[], None]]] = (),
    retries: bool = False,
) -> QuotaRun:
    """Run ``workers`` processes for ``seconds`` against ``sim`` (a SimulatorProcess enforcing
    ``rpm``); the warm-up requests are not counted. ``events`` are ``(seconds after the start,
    action)`` pairs run here while the workers work, e.g. stopping and restarting Redis."""
    # forkserver: one server process imports LangChain once, workers are forked from it
    # (spawn re-imports in every worker: seconds each on 2 cores; fork would copy our threads)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["benchmarks._quota_run", "langchain_openai"])
    start, results = ctx.Event(), ctx.Queue()
    args = (
        sim.base_url,
        redis_url,
        backend,
        rpm,
        burst_s,
        seconds,
        concurrency,
        retries,
        start,
        results,
    )
    procs = [ctx.Process(target=_worker, args=args) for _ in range(workers)]
    for proc in procs:
        proc.start()
    # wait for every warm-up request to have been answered before counting
    deadline = time.monotonic() + 60
    while sim.stats().count("chat") < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(max(burst_s, 1.0))  # let the server's window refill after the warm-ups
    sim.reset_stats()
    start.set()
    began = time.monotonic()
    for at_s, action in sorted(events, key=lambda e: e[0]):
        time.sleep(max(0.0, began + at_s - time.monotonic()))
        action()
    totals: list[tuple[int, int, float, float, int, bool]] = []
    limit = time.monotonic() + seconds + 60
    while len(totals) < workers:
        try:
            totals.append(results.get(timeout=0.5))
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > limit:
                for proc in procs:
                    proc.kill()
                raise RuntimeError(f"quota run workers failed (exit codes {dead})") from None
    # CLOCK_MONOTONIC is system-wide on Linux: the workers' stamps compare
    wall = max(t[3] for t in totals) - min(t[2] for t in totals)
    for proc in procs:
        proc.join(timeout=30)
    stats = sim.stats()
    return QuotaRun(
        backend=backend,
        workers=workers,
        seconds=seconds,
        ok=sum(t[0] for t in totals),
        failed=sum(t[1] for t in totals),
        answered=stats.count("chat"),
        throttled=stats.count("chat", 429),
        rpm=rpm,
        wall_s=wall,
        window_s=sim.config.limit_window_s,
        outages=tuple(t[4] for t in totals),
        degraded_at_end=tuple(t[5] for t in totals),
    )
