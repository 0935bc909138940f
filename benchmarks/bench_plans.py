"""Plan execution: makespan / critical path for eager, level-by-level and sequential execution.

200 random DAGs (8-40 steps, mixed widths) whose tools sleep a log-normal time (median 5 ms);
(a) ParallelPlanExecutor (eager), (b) a level-by-level executor (the old design: each level waits
for its slowest step), (c) sequential. Then the scheduling overhead per step with zero-latency
tools on a 10,000-step plan (wide and chained), for plain async tools and for LangChain tools
run as a traced Runnable. Then the planning loop (issue 23): scripted research requests four
ways, sequential tool calling to partial replans (benchmarks/_research.py).

    .venv/bin/python benchmarks/bench_plans.py [--plans 200] [--requests 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool

from benchmarks._research import research
from rat_langchain import ParallelPlanExecutor, Plan, Step


def random_plan(rng: random.Random) -> tuple[Plan, dict[str, float]]:
    n = rng.randint(8, 40)
    width = rng.choice([1, 2, 4, 8])
    steps = []
    latency = {}
    for i in range(n):
        window = list(range(max(0, i - width * 2), i))
        deps = rng.sample(window, k=min(len(window), rng.randint(0, 2)))
        steps.append(Step(id=f"s{i}", tool="work", args={f"d{d}": f"$s{d}" for d in deps}))
        latency[f"s{i}"] = min(0.2, rng.lognormvariate(-5.3, 0.8))  # median ~5 ms
    return Plan(steps=steps), latency


async def level_by_level(plan: Plan, tool: _Tool) -> float:
    start = time.perf_counter()
    for level in plan.levels():
        await asyncio.gather(*(tool({"__step": s}) for s in level))
    return time.perf_counter() - start


def critical_path(plan: Plan, latency: dict[str, float]) -> float:
    deps = plan.dependencies()
    finish: dict[str, float] = {}
    for step_id in plan.order():
        finish[step_id] = latency[step_id] + max((finish[d] for d in deps[step_id]), default=0.0)
    return max(finish.values())


async def run_plans(count: int) -> None:
    """Each makespan is divided by two critical paths: the nominal one (sum of the latencies the
    tools were asked to sleep) and the measured one (the same chain with the durations the tools
    actually took in that run, which includes the event loop's timer overshoot of up to ~1 ms
    per sleep: no scheduler can beat it, so it isolates the scheduler's own delay)."""
    rng = random.Random(7)
    names = ("eager", "levels", "sequential")
    nominal: dict[str, list[float]] = {name: [] for name in names}
    measured: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(count):
        plan, latency = random_plan(rng)
        plan = _with_ids(plan)  # each tool call learns its step from an extra argument
        best = critical_path(plan, latency)
        for name in names:
            tool = _Tool(latency)
            start = time.perf_counter()
            if name == "levels":
                await level_by_level(plan, tool)
            else:
                parallel = name == "eager"
                executor = ParallelPlanExecutor(
                    {"work": tool}, max_parallel_steps=64, parallel=parallel
                )
                await executor.aexecute(plan)
            makespan = time.perf_counter() - start
            nominal[name].append(makespan / best)
            measured[name].append(makespan / critical_path(plan, tool.took))
    print(
        "| executor | median makespan / critical path (nominal) | p90 "
        "| median / measured critical path | p90 |"
    )
    print("|---|---:|---:|---:|---:|")
    for name in names:
        a, b = nominal[name], measured[name]
        print(
            f"| {name} | {statistics.median(a):.3f} | {statistics.quantiles(a, n=10)[-1]:.3f} "
            f"| {statistics.median(b):.3f} | {statistics.quantiles(b, n=10)[-1]:.3f} |"
        )


class _Tool:
    """A tool that sleeps its step's latency and records how long that really took; the step
    is recognised by its id argument."""

    def __init__(self, latency: dict[str, float]) -> None:
        self.latency = latency
        self.took: dict[str, float] = {}

    async def __call__(self, args: dict[str, Any]) -> str:
        step = args["__step"]
        start = time.perf_counter()
        await asyncio.sleep(self.latency[step])
        self.took[step] = time.perf_counter() - start
        return step


def _with_ids(plan: Plan) -> Plan:
    return Plan(
        steps=[s.model_copy(update={"args": {**s.args, "__step": s.id}}) for s in plan.steps]
    )


@tool
async def _noop(x: Any = None) -> int:
    """Do nothing."""
    return 1


class _Tracer(BaseCallbackHandler):
    """A tracer's share of the work: it hears every run start and end (and keeps a count)."""

    def __init__(self) -> None:
        self.events = 0

    def on_chain_start(self, *args: Any, **kwargs: Any) -> None:
        self.events += 1

    def on_chain_end(self, *args: Any, **kwargs: Any) -> None:
        self.events += 1

    def on_tool_start(self, *args: Any, **kwargs: Any) -> None:
        self.events += 1

    def on_tool_end(self, *args: Any, **kwargs: Any) -> None:
        self.events += 1


async def overhead(n: int) -> None:
    async def instant(args: dict[str, Any]) -> int:
        return 1

    for shape in ("wide", "chain"):
        steps = [
            Step(
                id=f"s{i}", tool="t", args={} if shape == "wide" or i == 0 else {"x": f"$s{i - 1}"}
            )
            for i in range(n)
        ]
        plan = Plan(steps=steps)
        start = time.perf_counter()
        await ParallelPlanExecutor({"t": instant}, max_parallel_steps=64).aexecute(plan)
        per_step = (time.perf_counter() - start) / n * 1e6
        print(
            f"scheduling overhead, {n}-step {shape} plan, zero-latency tools: "
            f"{per_step:.0f} us/step"
        )
        # a LangChain no-op tool, the plan run as a Runnable (executor.ainvoke), without and
        # with a tracer attached (a callback handler that hears every run's start and end, as
        # LangSmith's or Langfuse's does): the executor's share is the time per step less the
        # tool's own ainvoke, measured alone the same way. The median of 5 rounds, the two
        # interleaved: one run of each moved by 100 us a step on a shared 2-core machine
        for label, config in (("", None), (", traced", {"callbacks": [_Tracer()]})):
            shares, tools = [], []
            for _ in range(5):
                wide = shape == "wide"
                tool_us = await _tool_alone(n // 5, config, {} if wide else {"x": 1}, wide=wide)
                start = time.perf_counter()
                await ParallelPlanExecutor({"t": _noop}, max_parallel_steps=64).ainvoke(
                    Plan(steps=steps[: n // 5]), config
                )
                per_step = (time.perf_counter() - start) / (n // 5) * 1e6
                shares.append(per_step - tool_us)
                tools.append(tool_us)
            print(
                f"executor overhead, {n // 5}-step {shape} plan x 5, @tool no-op via ainvoke"
                f"{label}: {statistics.median(shares):.0f} us/step (the tool's own ainvoke: "
                f"{statistics.median(tools):.0f} us)"
            )


async def _tool_alone(n: int, config: Any, args: dict[str, Any], *, wide: bool) -> float:
    """Microseconds per ``ainvoke`` of the no-op tool, called ``n`` times by hand as the plan
    would: one after another (a chain) or 64 at a time (a wide plan, as the executor's
    ``max_parallel_steps`` here: a sync tracer's thread hops overlap then), with the arguments
    its steps get; traced, inside one parent run, as the plan's steps are (a child run costs
    what a root run does not)."""

    async def calls(_: Any, config: RunnableConfig) -> None:
        if not wide:
            for _ in range(n):
                await _noop.ainvoke(args, config)
            return
        gate = asyncio.Semaphore(64)

        async def one() -> None:
            async with gate:
                await _noop.ainvoke(args, config)

        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(one())

    start = time.perf_counter()
    await RunnableLambda(calls).ainvoke(None, config)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=200)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(run_plans(args.plans))
    asyncio.run(overhead(10_000))
    print()
    asyncio.run(research(args.requests))


if __name__ == "__main__":
    main()
