"""Metrics fed by a ClientPool from the inside, and by the callback handler from a plain chain."""

from __future__ import annotations

import asyncio

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from rat_langchain import ClientPool, Metrics
from rat_langchain.sim import Reply, SimulatorThread
from tests.conftest import API_KEY, pool_config


async def test_the_pool_records_calls_retries_429s_and_connection_reuse(
    sim: SimulatorThread,
) -> None:
    config = pool_config(
        performance={"retries": {"initial_backoff_s": 0.01, "max_backoff_s": 0.02}}
    )
    async with ClientPool(config) as pool:
        llm = pool.chat_model(model="gpt-4o-mini", base_url=sim.base_url, api_key=API_KEY)
        sim.push(Reply(status=429, headers={"retry-after-ms": "10"}), Reply(status=500))
        for _ in range(2):  # two waves of 10: the second reuses the first's connections
            await asyncio.gather(*(llm.ainvoke(f"q{i}") for i in range(10)))
        snapshot = pool.metrics.snapshot()
    series = snapshot["series"][f"{sim.base_url} gpt-4o-mini"]
    assert series["calls"] == 20
    assert series["ok"] == 20
    assert series["retries"] == 2  # the 429 and the 500 were retried
    assert series["rate_limited"] == 1
    assert series["latency_ms"]["samples"] == 20
    connections = snapshot["connections"]
    assert connections["opened"] == sim.stats().connections_opened  # the server agrees
    assert connections["opened"] + connections["reused"] == 22  # every HTTP request
    assert connections["reused"] >= 10


async def test_the_callback_handler_records_a_plain_langchain_chain(sim: SimulatorThread) -> None:
    metrics = Metrics()
    llm = ChatOpenAI(model="gpt-4o-mini", base_url=sim.base_url, api_key=API_KEY, max_retries=0)
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | llm | StrOutputParser()
    sim.push(Reply(status=429))
    handler = metrics.handler()
    results = await chain.abatch(
        [{"q": str(i)} for i in range(5)], config={"callbacks": [handler]}, return_exceptions=True
    )
    chain.invoke({"q": "sync"}, config={"callbacks": [handler]})
    assert sum(isinstance(r, Exception) for r in results) == 1
    (series,) = metrics.snapshot()["series"].values()
    assert series["calls"] == 6
    assert series["ok"] == 5
    assert series["rate_limited"] == 1
    assert list(series["errors"]) == ["OpenAIRateLimitError"]
