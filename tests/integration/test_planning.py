"""Planner, Orchestrator and BackgroundVerifier against the simulator's scripted LLM."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

from rat_langchain import (
    BackgroundVerifier,
    ClientPool,
    Orchestrator,
    ParallelPlanExecutor,
    Plan,
    Planner,
    PlanningError,
    StepStatus,
    ToolCatalog,
)
from rat_langchain.sim import Reply, SimulatorThread
from tests.conftest import API_KEY, pool_config


@tool
async def search(query: str) -> dict[str, Any]:
    """Search the web; returns the top hits."""
    return {"hits": [f"hit for {query}"]}


@tool
async def summarise(text: str) -> str:
    """Summarise a text in one sentence."""
    return f"summary of {text}"


TOOLS = [search, summarise]

GOOD = {
    "goal": "compare",
    "steps": [
        {"id": "s1", "tool": "search", "args": {"query": "FAISS"}},
        {"id": "s2", "tool": "search", "args": {"query": "ScaNN"}},
        {"id": "s3", "tool": "summarise", "args": {"text": "$s1.hits.0 vs $s2.hits.0"}},
    ],
}


@pytest.fixture
async def pool() -> AsyncIterator[ClientPool]:
    pool = ClientPool(pool_config())
    yield pool
    await pool.aclose()


def chat(pool: ClientPool, sim: SimulatorThread) -> Any:
    return pool.chat_model(model="gpt-4o-mini", base_url=sim.base_url, api_key=API_KEY)


class Prompts(AsyncCallbackHandler):
    """Records what each chat model call was sent."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    async def on_chat_model_start(
        self, serialized: Any, messages: list[list[Any]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.calls.append(messages[0])


async def test_planner_builds_a_plan_with_structured_output(
    sim: SimulatorThread, pool: ClientPool
) -> None:
    sim.push(Reply(content=json.dumps(GOOD)))
    planner = Planner(chat(pool, sim), TOOLS)
    plan = await planner.acreate_plan("Compare FAISS and ScaNN")
    assert isinstance(plan, Plan)
    assert [s.id for s in plan.steps] == ["s1", "s2", "s3"]
    assert plan.levels() == [["s1", "s2"], ["s3"]]


async def test_an_invalid_plan_is_repaired_with_the_error_sent_back(
    sim: SimulatorThread, pool: ClientPool
) -> None:
    cyclic = {
        "steps": [
            {"id": "a", "tool": "search", "args": {"query": "$b"}},
            {"id": "b", "tool": "search", "args": {"query": "$a"}},
        ]
    }
    sim.push(Reply(content=json.dumps(cyclic)), Reply(content=json.dumps(GOOD)))
    prompts = Prompts()
    planner = Planner(chat(pool, sim), TOOLS, max_repairs=1)
    plan = await planner.ainvoke("Compare", config={"callbacks": [prompts]})
    assert [s.id for s in plan.steps] == ["s1", "s2", "s3"]
    assert len(prompts.calls) == 2
    repair = prompts.calls[1][-1].content
    assert "cycle" in repair
    assert "a -> b -> a" in repair
    # out of repair rounds: every attempt's problem is reported
    unknown = {"steps": [{"id": "a", "tool": "rm_rf", "args": {}}]}
    sim.push(Reply(content="not json"), Reply(content=json.dumps(unknown)))
    with pytest.raises(PlanningError) as caught:
        await planner.acreate_plan("Compare")
    assert len(caught.value.errors) == 2
    assert "not valid JSON" in caught.value.errors[0]
    assert "rm_rf" in caught.value.errors[1]


async def test_intent_analysis_and_routing_overlap(sim: SimulatorThread, pool: ClientPool) -> None:
    """Each waits until the other has started: run one after the other, they would deadlock."""
    started = {"intent": asyncio.Event(), "route": asyncio.Event()}

    def job(name: str, other: str, answer: str) -> RunnableLambda[str, str]:
        async def run(request: str) -> str:
            started[name].set()
            await started[other].wait()
            return answer

        return RunnableLambda(run)

    sim.push(Reply(content=json.dumps(GOOD)))
    prompts = Prompts()
    planner = Planner(
        chat(pool, sim),
        ToolCatalog(TOOLS),
        intent=job("intent", "route", "comparison"),
        router=job("route", "intent", "research-agent"),
    )
    async with asyncio.timeout(10):
        plan = await planner.ainvoke({"request": "Compare"}, config={"callbacks": [prompts]})
    assert plan.context == {"intent": "comparison", "route": "research-agent"}
    assert "Intent: comparison" in prompts.calls[0][-1].content


async def test_streamed_plan_overlaps_planning_and_execution(
    pool: ClientPool,
) -> None:
    log: list[str] = []

    @tool
    async def fetch(url: str) -> str:
        """Fetch a page."""
        log.append(f"run {url}")
        return url

    steps = [{"id": f"s{i}", "tool": "fetch", "args": {"url": f"u{i}"}} for i in range(6)]
    with SimulatorThread(per_token_ms=3.0) as slow:
        slow.push(Reply(content=json.dumps({"steps": steps})))
        planner = Planner(chat(pool, slow), [fetch])
        executor = ParallelPlanExecutor([fetch])

        async def watched() -> AsyncIterator[Any]:
            async for step in planner.astream_steps("fetch six pages"):
                yield step
            log.append("plan complete")

        result = await executor.aexecute_stream(watched())
        await pool.aclose()
    assert result.succeeded
    assert len(result.steps) == 6
    assert log.index("run u0") < log.index("plan complete")


async def test_orchestrator_plans_executes_and_verifies(
    sim: SimulatorThread, pool: ClientPool
) -> None:
    checked: list[str] = []

    async def verifier(payload: dict[str, Any]) -> bool:
        checked.append(payload["step"])
        return True

    sim.push(Reply(content=json.dumps(GOOD)))
    planner = Planner(chat(pool, sim), TOOLS)
    executor = ParallelPlanExecutor(TOOLS, verifier=verifier, verify_all=True)
    result = await Orchestrator(planner, executor).aexecute("Compare FAISS and ScaNN")
    assert result.succeeded
    assert result.verified
    assert result.steps["s3"].value == "summary of hit for FAISS vs hit for ScaNN"
    assert sorted(checked) == ["s1", "s2", "s3"]
    # planner | executor composes in LCEL
    sim.push(Reply(content=json.dumps(GOOD)))
    chained = await (planner | executor).ainvoke("Compare")
    assert chained.steps["s3"].status == StepStatus.SUCCEEDED


def test_orchestrator_sync_execute_works_inside_a_running_loop(sim: SimulatorThread) -> None:
    pool = ClientPool(pool_config())
    orch = Orchestrator.from_config(chat(pool, sim), TOOLS, pool_config(), streaming=True)

    async def old_caller() -> Any:
        return orch.execute("Compare")  # a sync call made from async code

    sim.push(Reply(content=json.dumps(GOOD)))
    result = asyncio.run(old_caller())
    assert result.succeeded
    assert len(result.steps) == 3
    asyncio.run(pool.aclose())  # closes the client on the library's sync-call loop too


# -- BackgroundVerifier on a plain chain ------------------------------------------------------


async def test_background_verifier_never_delays_the_run_and_loses_no_verdict(
    sim: SimulatorThread, pool: ClientPool
) -> None:
    chain_done = asyncio.Event()
    seen: list[tuple[str, str]] = []

    async def slow_verifier(payload: dict[str, Any]) -> dict[str, Any]:
        await chain_done.wait()  # a verifier that blocked the run would deadlock here
        seen.append((payload["kind"], payload["name"]))
        return {"passed": bool(payload["output"])}

    verifier = BackgroundVerifier(slow_verifier, max_concurrency=2)
    prompt = ChatPromptTemplate.from_messages([("user", "{q}")])
    chain = prompt | chat(pool, sim) | StrOutputParser()
    async with asyncio.timeout(10):
        answers = await chain.abatch(
            [{"q": "one"}, {"q": "two"}, {"q": "three"}], config={"callbacks": [verifier]}
        )
        await search.ainvoke({"query": "x"}, config={"callbacks": [verifier]})
    assert len(answers) == 3
    assert verifier.pending == 4
    chain_done.set()
    verdicts = await verifier.wait()
    assert len(verdicts) == 4
    assert all(v.passed for v in verdicts)
    assert sorted(k for k, _ in seen) == ["llm", "llm", "llm", "tool"]
    assert ("tool", "search") in seen
    assert ("llm", "gpt-4o-mini") in seen


async def test_background_verifier_keeps_verdicts_of_failed_and_cancelled_runs(
    sim: SimulatorThread, pool: ClientPool
) -> None:
    release = asyncio.Event()

    async def verifier(payload: dict[str, Any]) -> bool:
        await release.wait()
        return True

    background = BackgroundVerifier(verifier)

    def explode(text: str) -> str:
        raise RuntimeError("after the LLM")

    llm = chat(pool, sim)
    failing = llm | StrOutputParser() | RunnableLambda(explode)
    with pytest.raises(RuntimeError, match="after the LLM"):
        await failing.ainvoke("hi", config={"callbacks": [background]})

    blocked = asyncio.Event()

    async def hang(text: str) -> str:
        blocked.set()
        await asyncio.Event().wait()
        return text

    hanging = llm | StrOutputParser() | RunnableLambda(hang)
    task = asyncio.create_task(hanging.ainvoke("hi", config={"callbacks": [background]}))
    await blocked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    verdicts = await background.wait()
    assert [v.kind for v in verdicts] == ["llm", "llm"]  # both LLM outputs were verified


def test_background_verifier_rejects_bad_settings() -> None:
    with pytest.raises(TypeError, match="Runnable or a callable"):
        BackgroundVerifier(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrency"):
        BackgroundVerifier(lambda p: True, max_concurrency=0)
