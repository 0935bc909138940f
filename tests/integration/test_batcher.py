"""LLMBatcher over the simulator: order kept, failures in place, none lost."""

from __future__ import annotations

import openai
import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from rat_langchain import ClientPool, LLMBatcher, ResilientRunnable
from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY, pool_config

PROMPT = ChatPromptTemplate.from_messages([("user", "question number {i}")])


def no_retries_pool() -> ClientPool:
    return ClientPool(
        pool_config(
            performance={"retries": {"enabled": False}, "circuit_breaker": {"enabled": False}}
        )
    )


async def test_500_prompts_with_10_percent_failures_come_back_in_order() -> None:
    with SimulatorThread(seed=7, error_rate=0.1) as sim:
        async with no_retries_pool() as pool:
            llm = pool.chat_model(model="gpt-4o-mini", base_url=sim.base_url, api_key=API_KEY)
            batcher = LLMBatcher(PROMPT | llm | StrOutputParser(), max_concurrency=32)
            assert batcher.runnable is not None
            results = await batcher.abatch([{"i": i} for i in range(500)])
            errors_seen_by_server = sim.stats().count("chat", 500)
    assert len(results) == 500
    failed = [r for r in results if isinstance(r, Exception)]
    assert len(failed) == errors_seen_by_server  # each failure in place, none hidden
    assert 20 <= len(failed) <= 90
    assert all(isinstance(f, openai.InternalServerError) for f in failed)
    for i, result in enumerate(results):
        if isinstance(result, str):
            assert f"number {i}" in result  # the answer to this input, at its index


async def test_first_failure_can_fail_the_batch_instead(sim: SimulatorThread) -> None:
    def explode(x: dict[str, int]) -> int:
        if x["i"] == 3:
            raise ValueError("input 3 is bad")
        return x["i"]

    batcher = LLMBatcher(RunnableLambda(explode), return_exceptions=False, wrap=False)
    with pytest.raises(ValueError, match="input 3"):
        await batcher.abatch([{"i": i} for i in range(10)])
    in_place = LLMBatcher(RunnableLambda(explode), wrap=False, max_concurrency=2)
    results = in_place.batch([{"i": i} for i in range(6)], None)  # the sync twin
    assert results[:3] == [0, 1, 2]
    assert isinstance(results[3], ValueError)
    assert results[4:] == [4, 5]


def test_guarding_is_automatic_and_never_doubled(sim: SimulatorThread) -> None:
    pool = no_retries_pool()
    llm = pool.chat_model(model="gpt-4o-mini", base_url=sim.base_url, api_key=API_KEY)
    assert LLMBatcher(PROMPT | llm).runnable.first is PROMPT  # type: ignore[attr-defined]
    bare = LLMBatcher(RunnableLambda(lambda x: x), config=pool.config)
    assert isinstance(bare.runnable, ResilientRunnable)
    with pytest.raises(ValueError, match="max_concurrency"):
        LLMBatcher(bare.runnable, max_concurrency=0)
    pool.close()
