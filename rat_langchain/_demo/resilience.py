"""The demo's second part: limits and faults absorbed, and the circuit breaker at work.

The simulator enforces 1200 RPM over 1 s windows (20 requests/s) and injects 10 % 500s and 3 %
connection resets. The same 200 calls go through LangChain's default ChatOpenAI (the SDK's two
retries) and through ``pool.chat_model()`` (limiter + tenacity retries + breaker). Then the
simulator goes fully down: the breaker opens, refuses calls without touching the server, and
closes again through a half-open probe once the simulator recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import Counter
from typing import Any

from langchain_openai import ChatOpenAI

from rat_langchain._demo.stats import learned_lines
from rat_langchain.config import RatConfig
from rat_langchain.guards.breaker import CircuitOpenError, State, StateChange
from rat_langchain.pool.pool import ClientPool
from rat_langchain.sim import SimulatorProcess

KEY = "sk-demo-simulated"
CALLS = 200
FAULTS = {"error_rate": 0.10, "reset_rate": 0.03}


def _config() -> RatConfig:
    """Rate limits left to the limiter to learn; retries and breaker quick enough for a demo."""
    return RatConfig.from_dict(
        {
            "performance": {
                "retries": {"max_attempts": 6, "initial_backoff_s": 0.05, "max_backoff_s": 1.0},
                "circuit_breaker": {"consecutive_failures": 10, "wait_s": 2.0, "max_wait_s": 8.0},
            }
        },
        env={},
    )


async def _load(llm: Any, calls: int, concurrency: int) -> tuple[int, list[str], float]:
    gate = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(i: int) -> None:
        async with gate:
            try:
                await llm.ainvoke(f"resilience question {i}")
            except Exception as exc:
                errors.append(type(exc).__name__)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for i in range(calls):
            tg.create_task(one(i))
    return calls - len(errors), errors, time.perf_counter() - start


def resilience_part(sim: SimulatorProcess, model: str, calls: int = CALLS) -> None:
    print("\nResilience: the simulator now enforces 1200 RPM per second (20 req/s) and injects")
    print(f"10% HTTP 500s and 3% connection resets; {calls} calls, 50 at a time.\n")
    header = (
        f"{'run':<34} {'ok':>4} {'failed':>6} {'429s':>5} {'5xx':>4} {'resets':>6} {'wall s':>7}"
    )
    print(header)

    def show(label: str, ok: int, wall: float) -> None:
        stats = sim.stats()
        print(
            f"{label:<34} {ok:>4} {calls - ok:>6} {stats.count('chat', 429):>5} "
            f"{stats.count('chat', 500):>4} {stats.faults.get('reset', 0):>6} {wall:>7.1f}"
        )

    async def main() -> None:
        sim.configure(rpm=1200, limit_window_s=1.0, seed=42, **FAULTS)
        default = ChatOpenAI(model=model, base_url=sim.base_url, api_key=KEY, timeout=30)
        ok, errors, wall = await _load(default, calls, 50)
        show("LangChain default (SDK retries)", ok, wall)
        if errors:
            print(f"{'':<34} failures seen by the caller: {dict(Counter(errors))}")
        sim.reset_stats()
        sim.configure(rpm=1200, limit_window_s=1.0, seed=42, **FAULTS)
        async with ClientPool(_config()) as pool:
            llm = pool.chat_model(model=model, base_url=sim.base_url, api_key=KEY)
            ok, errors, wall = await _load(llm, calls, 50)
            show("rat_langchain pool.chat_model()", ok, wall)
            guard = llm.guard
            if guard is None or guard.breaker is None:  # the demo's config enables both
                raise RuntimeError("the demo needs retries and the circuit breaker enabled")
            print(f"{'':<34} retries: {guard.stats.retries}, callers saw {len(errors)} errors")
            print(
                "\n".join(
                    ["learned, with no limit configured:", *learned_lines(pool.metrics.snapshot())]
                )
            )
            await _outage(sim, llm, guard.breaker)

    asyncio.run(main())


async def _outage(sim: SimulatorProcess, llm: Any, breaker: Any) -> None:
    print("\nOutage: the simulator answers every request with 500.")
    changes: list[StateChange] = []
    breaker.add_listener(changes.append)
    sim.reset_stats()
    sim.configure(rpm=None, error_rate=1.0, reset_rate=0.0)
    start = time.perf_counter()
    calls = 0
    while breaker.state != State.OPEN and calls < 10:
        calls += 1
        with contextlib.suppress(Exception):
            await llm.ainvoke(f"are you there? ({calls})")
    opened = time.perf_counter() - start
    reached = sim.stats().count("chat")
    print(
        f"  breaker: {breaker.state.value} after {reached} failed attempts in {calls} calls "
        f"({opened:.2f} s); each attempt counted, not each exhausted call"
    )
    refusals = []
    retry_in = 0.0
    for i in range(50):
        t = time.perf_counter()
        try:
            await llm.ainvoke(f"call {i}")
        except CircuitOpenError as exc:
            refusals.append(time.perf_counter() - t)
            retry_in = exc.retry_in or 0.0
    print(
        f"  {len(refusals)} later calls refused in {statistics.median(refusals) * 1e3:.2f} ms "
        f"(median); requests that reached the server meanwhile: "
        f"{sim.stats().count('chat') - reached}"
    )
    sim.configure(error_rate=0.0)
    print(f"  simulator recovered; the breaker allows a probe in {retry_in:.2f} s ...")
    await asyncio.sleep(retry_in)  # the demo waits on the clock, as a user would
    await asyncio.gather(*(llm.ainvoke(f"probe {i}") for i in range(2)))
    path = " -> ".join([changes[0].old.value, *(c.new.value for c in changes)]) if changes else ""
    print(f"  breaker transitions: {path}")
