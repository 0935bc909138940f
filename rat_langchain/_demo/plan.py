"""The demo's plan step: a research request planned by the (scripted) LLM and run in parallel.

Tools of different latencies make the point of eager scheduling: a step starts when its own
inputs are ready, not when the slowest step of its level is done. Prints the timeline, then the
makespan next to a sequential run of the same plan and the plan's critical path.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import StructuredTool

from rat_langchain.config import RatConfig
from rat_langchain.plans.executor import ParallelPlanExecutor, PlanResult
from rat_langchain.plans.orchestrator import Orchestrator
from rat_langchain.plans.planner import Planner
from rat_langchain.pool.pool import ClientPool
from rat_langchain.sim import Reply, SimulatorProcess

KEY = "sk-demo-simulated"
REQUEST = "Compare FAISS and ScaNN for a 10-million-vector RAG index"
PLAN = {
    "goal": REQUEST,
    "steps": [
        {"id": "s1", "tool": "web_search", "args": {"query": "FAISS IVF-PQ benchmark"}},
        {"id": "s2", "tool": "web_search", "args": {"query": "ScaNN benchmark"}},
        {"id": "s3", "tool": "fetch_page", "args": {"url": "$s1.top"}},
        {"id": "s4", "tool": "fetch_slow_page", "args": {"url": "$s2.top"}},
        {"id": "s5", "tool": "search_index", "args": {"query": "vector index sizing"}},
        {"id": "s6", "tool": "summarise", "args": {"text": "$s3"}, "verify": True},
        {"id": "s7", "tool": "summarise", "args": {"text": "$s4"}, "verify": True},
        {"id": "s8", "tool": "extract_figures", "args": {"text": "$s6"}},
        {
            "id": "s9",
            "tool": "summarise",
            "args": {"text": "Compare: $s8 / $s7 / notes: $s5"},
            "verify": True,
        },
    ],
}
LATENCY_S = {
    "web_search": 0.30,
    "fetch_page": 0.15,
    "fetch_slow_page": 0.60,
    "search_index": 0.08,
    "extract_figures": 0.40,
}
_SUMMARY = ChatPromptTemplate.from_messages([("user", "Summarise in one line: {text}")])


def _timed_tool(name: str) -> Any:
    async def run(args: dict[str, Any]) -> Any:
        await asyncio.sleep(LATENCY_S[name])
        text = next(iter(args.values()), "")
        if name == "web_search":
            return {"top": f"https://example.org/{str(text).replace(' ', '-')}"}
        return f"{name}({text})"

    run.__doc__ = f"{name.replace('_', ' ')} ({LATENCY_S[name] * 1000:.0f} ms)"
    return run


def build_tools(llm: Any) -> dict[str, Any]:
    """The plan's tools: simulated ones of fixed latency, and an LLM summariser on ``llm``."""
    tools: dict[str, Any] = {name: _timed_tool(name) for name in LATENCY_S}
    chain = _SUMMARY | llm | StrOutputParser()

    async def summarise(text: str) -> str:
        """Summarise a text in one line (an LLM call)."""
        return str(await chain.ainvoke({"text": text[:200]}))

    tools["summarise"] = StructuredTool.from_function(coroutine=summarise)
    return tools


async def slow_verifier(payload: dict[str, Any]) -> bool:
    """A check that takes 200 ms: in the background it delays no step."""
    await asyncio.sleep(0.2)
    return bool(payload["output"])


def plan_part(sim: SimulatorProcess, model: str) -> None:
    print(f"\nPlanning and running a research request (scripted LLM plan):\n  {REQUEST!r}")
    config = RatConfig.from_dict({"performance": {"rate_limiting": {"enabled": False}}}, env={})

    async def main() -> None:
        async with ClientPool(config) as pool:
            llm = pool.chat_model(model=model, base_url=sim.base_url, api_key=KEY)
            tools = build_tools(llm)
            planner = Planner(llm, tools)
            executor = ParallelPlanExecutor(tools, verifier=slow_verifier, max_parallel_steps=8)
            sim.push(Reply(content=json.dumps(PLAN)))
            result = await Orchestrator(planner, executor).aexecute(REQUEST)
            sequential = await ParallelPlanExecutor(tools, parallel=False).aexecute(result.plan)
        _print_timeline(result)
        path, length = result.critical_path()
        levels = sum(max(result.steps[i].duration for i in level) for level in result.plan.levels())
        verified = sum(v.passed for v in result.verdicts.values())
        print(
            f"  makespan {result.makespan * 1000:.0f} ms (parallel, eager) vs "
            f"{sequential.makespan * 1000:.0f} ms sequential "
            f"({sequential.makespan / result.makespan:.1f}x)"
        )
        print(
            f"  critical path {' -> '.join(path)} = {length * 1000:.0f} ms; level by level "
            f"(each level waits for its slowest step) would take ~{levels * 1000:.0f} ms"
        )
        print(
            f"  {verified}/{len(result.verdicts)} background verifications passed "
            "(200 ms each, run in the background: no step waited for one)"
        )

    asyncio.run(main())


def _print_timeline(result: PlanResult, width: int = 48) -> None:
    span = max(result.makespan, 1e-9)
    print(f"  {'step':<5}{'tool':<17}0 ms{'':<{width - 10}}{span * 1000:>6.0f} ms")
    for step in result.plan.steps:
        outcome = result.steps[step.id]
        if outcome.started is None or outcome.ended is None:
            print(f"  {step.id:<5}{step.tool:<17}{outcome.status.value}")
            continue
        start, stop = outcome.started - result.started, outcome.ended - result.started
        begin = round(start / span * width)
        end = max(begin + 1, round(stop / span * width))
        bar = " " * begin + "#" * (end - begin) + " " * (width - end)
        times = f"{start * 1000:4.0f}-{stop * 1000:.0f} ms"
        print(f"  {step.id:<5}{step.tool:<17}|{bar}| {times}")
