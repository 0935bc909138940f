"""Run a plan of tool steps in parallel: each step starts the moment its inputs are ready.

Steps refer to earlier results as ``$s1.field``; the executor finds those dependencies, runs
independent steps at once, verifies marked steps in the background and isolates failures.
The summariser is an LLM call through the pooled, rate-limited client (the embedded simulator
unless OPENAI_API_KEY is set).

    .venv/bin/python examples/run_plan.py
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool

from rat_langchain import ClientPool, ParallelPlanExecutor, Plan, RatConfig, Step
from rat_langchain.sim import endpoint_or_simulator


@tool
async def search(query: str) -> dict[str, Any]:
    """A stand-in for a web search tool (300 ms)."""
    await asyncio.sleep(0.3)
    return {"hits": [f"{query}: result {i}" for i in range(3)]}


@tool
async def fetch(url: str) -> str:
    """A stand-in for fetching a page (150 ms)."""
    await asyncio.sleep(0.15)
    return f"the text of {url}"


async def run(pool: ClientPool) -> None:
    llm = pool.chat_model(model="gpt-4o-mini")
    summary = ChatPromptTemplate.from_messages([("user", "Summarise: {text}")]) | llm
    summary_text = summary | StrOutputParser()

    @tool
    async def summarise(text: str) -> str:
        """Summarise a text in one line (an LLM call)."""
        return await summary_text.ainvoke({"text": text})

    async def looks_fine(payload: dict[str, Any]) -> bool:  # runs in the background
        return bool(payload["output"])

    plan = Plan(
        steps=[
            Step(id="s1", tool="search", args={"query": "FAISS"}),
            Step(id="s2", tool="search", args={"query": "ScaNN"}),
            Step(id="s3", tool="fetch", args={"url": "$s1.hits.0"}),
            Step(id="s4", tool="summarise", args={"text": "$s3 versus $s2.hits.0"}, verify=True),
        ]
    )
    # LangChain tools get the step's args as keywords; a plain callable would get them as one dict
    executor = ParallelPlanExecutor([search, fetch, summarise], verifier=looks_fine)
    result = await executor.aexecute(plan)
    print(f"levels (for display only): {plan.levels()}")
    for step_id, step in result.steps.items():
        print(f"  {step_id}: {step.status.value:<9} {str(step.value)[:60]!r}")
    path, seconds = result.critical_path()
    print(
        f"makespan {result.makespan * 1000:.0f} ms; critical path {' -> '.join(path)} "
        f"{seconds * 1000:.0f} ms (run one after another: ~1100 ms)"
    )
    print(f"verified in the background: {result.verified}")


def main() -> None:
    with endpoint_or_simulator(latency_ms=50) as endpoint:  # the simulator unless a key is set
        config = RatConfig.load().with_endpoint(**endpoint)
        asyncio.run(run(ClientPool(config)))


if __name__ == "__main__":
    main()
