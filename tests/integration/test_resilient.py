"""resilient(...) and the pool's ResilientChatOpenAI against the simulator."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any
from uuid import UUID

import openai
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_openai import ChatOpenAI

from rat_langchain import (
    ApiKeyError,
    CircuitBreaker,
    CircuitOpenError,
    ClientPool,
    RateLimiter,
    ResilientChatOpenAI,
    RetryPolicy,
    resilient,
)
from rat_langchain.sim import Reply, SimulatorThread
from tests.conftest import API_KEY, pool_config

FAST = RetryPolicy(max_attempts=5, initial_backoff_s=0.01, max_backoff_s=0.05)
PROMPT = ChatPromptTemplate.from_messages([("user", "{q}")])


def plain_llm(sim: SimulatorThread) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini", base_url=sim.base_url, api_key=API_KEY, max_retries=0, timeout=10
    )


def wrap(runnable: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("limiter", None)
    kwargs.setdefault("breaker", None)
    kwargs.setdefault("timeout", None)
    return resilient(runnable, **kwargs)


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, UUID | None]] = []

    def on_chain_start(
        self,
        serialized: Any,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kw: Any,
    ) -> None:
        self.events.append(("chain_start", parent_run_id))

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kw: Any,
    ) -> None:
        self.events.append(("chat_model_start", parent_run_id))

    def on_llm_new_token(self, token: str, **kw: Any) -> None:
        self.events.append(("token", None))

    def on_llm_end(
        self, response: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> None:
        self.events.append(("llm_end", parent_run_id))


def test_every_entry_point_is_guarded_and_retries(sim: SimulatorThread) -> None:
    guarded = wrap(plain_llm(sim))
    sim.push(Reply(status=503))
    assert guarded.invoke("sync").content.startswith("Simulated")
    assert len(guarded.batch(["a", "b", "c"])) == 3
    chunks = list(guarded.stream("sync stream"))
    assert "".join(c.content for c in chunks).startswith("Simulated")

    async def main() -> None:
        sim.push(Reply(status=500))
        assert (await guarded.ainvoke("async")).content
        assert len(await guarded.abatch(["x", "y"])) == 2
        parts = [c.content async for c in guarded.astream("async stream")]
        assert "".join(parts).startswith("Simulated")

    asyncio.run(main())
    stats = guarded.guard.stats
    assert stats.calls == 9
    assert stats.retries == 2
    assert sim.stats().count("chat") == stats.attempts == 11


def test_callbacks_see_the_inner_model_as_a_child_run(sim: SimulatorThread) -> None:
    guarded = wrap(plain_llm(sim))
    recorder = Recorder()
    guarded.invoke("hello", config={"callbacks": [recorder]})
    kinds = [kind for kind, _ in recorder.events]
    assert kinds[0] == "chain_start"
    assert "chat_model_start" in kinds
    assert "llm_end" in kinds
    parent = dict(recorder.events)["chat_model_start"]
    assert parent is not None  # nested under the wrapper's run

    async def main() -> list[str]:
        events = []
        async for event in guarded.astream_events("stream me", version="v2"):
            events.append(event["event"])
        return events

    events = asyncio.run(main())
    assert "on_chat_model_stream" in events
    assert "on_chat_model_end" in events


def test_inside_a_sequence_batch_and_stream_go_through_the_guard(sim: SimulatorThread) -> None:
    guarded = wrap(plain_llm(sim))
    chain = PROMPT | guarded | StrOutputParser()

    async def main() -> None:
        answers = await chain.abatch([{"q": f"q{i}"} for i in range(6)])
        assert len(answers) == 6
        text = "".join([part async for part in chain.astream({"q": "streamed"})])
        assert text.startswith("Simulated")

    asyncio.run(main())
    assert guarded.guard.stats.calls == 7


def test_stream_retries_before_the_first_chunk_and_surfaces_errors_after(
    sim: SimulatorThread,
) -> None:
    guarded = wrap(plain_llm(sim))

    async def main() -> None:
        sim.push(Reply(status=503), Reply(fault="reset"))
        text = "".join([c.content async for c in guarded.astream("retry me")])
        assert text.startswith("Simulated")
        assert guarded.guard.stats.retries == 2
        sim.push(Reply(fault="cut"))
        seen: list[str] = []

        async def consume() -> None:
            async for chunk in guarded.astream("cut me"):
                seen.append(chunk.content)

        with pytest.raises(openai.APIConnectionError):
            await consume()
        assert seen  # the first chunk arrived before the failure
        assert guarded.guard.stats.retries == 2  # and the broken stream was not retried

    asyncio.run(main())


def test_breaker_fails_fast_for_any_runnable(sim: SimulatorThread) -> None:
    calls = 0

    def flaky(x: str) -> str:
        nonlocal calls
        calls += 1
        raise ConnectionError("tool backend down")

    breaker = CircuitBreaker("tool", consecutive_failures=3, wait_s=60)
    guarded = wrap(
        RunnableLambda(flaky),
        breaker=breaker,
        retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.001),
    )
    for _ in range(2):
        with pytest.raises((ConnectionError, CircuitOpenError)):
            guarded.invoke("x")
    with pytest.raises(CircuitOpenError):
        guarded.invoke("x")
    assert calls == 3


def test_tokens_are_charged_to_the_limiter_by_cost(sim: SimulatorThread) -> None:
    limiter = RateLimiter(rpm=None, tpm=1000, safety_margin=1.0)
    guarded = wrap(RunnableLambda(lambda x: x), limiter=limiter, key="echo", cost=lambda x: len(x))
    assert guarded.invoke("a" * 600) == "a" * 600
    assert limiter.try_acquire("echo", tokens=500) is None  # 600 of 1000 already taken


def test_pool_chat_model_is_resilient_by_default(sim: SimulatorThread) -> None:
    pool = ClientPool(
        pool_config(performance={"retries": {"initial_backoff_s": 0.01, "max_backoff_s": 0.05}})
    )
    llm = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)
    assert isinstance(llm, ResilientChatOpenAI)
    assert llm.root_async_client.max_retries == 0  # tenacity retries, once
    guard = llm.guard
    assert guard is not None
    assert guard.breaker is not None
    assert guard.breaker is pool.chat_model(base_url=sim.base_url, api_key=API_KEY).guard.breaker
    sim.push(Reply(status=500), Reply(status=502))
    assert llm.invoke("absorbed").content.startswith("Simulated")
    sim.push(Reply(status=503))
    assert "".join(c.content for c in llm.stream("streamed")).startswith("Simulated")

    async def main() -> None:
        sim.push(Reply(fault="reset"))
        assert (await llm.ainvoke("async")).content
        structured = llm.with_structured_output(
            {
                "title": "T",
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "required": ["a"],
            }
        )
        sim.push(Reply(status=500))
        assert "a" in await structured.ainvoke("json please")

    asyncio.run(main())
    assert guard.stats.retries == 5
    assert sim.stats().count("chat") == guard.stats.attempts


def test_sync_call_from_inside_a_running_loop_works(sim: SimulatorThread) -> None:
    pool = ClientPool(pool_config())
    llm = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)

    async def legacy_code_path() -> str:
        return str(llm.invoke("called synchronously inside a loop").content)

    assert asyncio.run(legacy_code_path()).startswith("Simulated")


def test_1000_concurrent_calls_no_new_threads_and_bounded_connections(sim: SimulatorThread) -> None:
    pool = ClientPool(
        pool_config(
            max_connections=64,
            performance={"rate_limiting": {"rpm_limit": 1_000_000, "tpm_limit": 100_000_000}},
        )
    )
    llm = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)
    assert llm.guard is not None
    assert llm.guard.limiter is not None  # limits set far above the load: they must not bind

    async def main() -> None:
        await llm.ainvoke("warm up: platform, executor and one socket")
        before = {t.ident for t in threading.enumerate()}
        results = await asyncio.gather(*(llm.ainvoke(f"q{i}") for i in range(1000)))
        assert len(results) == 1000
        # No thread does I/O. The only new threads are the loop's default executor, where
        # langchain-openai's _agenerate parses each result (run_in_executor(None, ...)); that
        # pool is bounded (min(32, cpus + 4)) and reused, so a second burst adds none.
        new = [t for t in threading.enumerate() if t.ident not in before]
        assert all(t.name.startswith("asyncio_") for t in new), [t.name for t in new]
        assert len(new) <= min(32, (os.cpu_count() or 1) + 4)
        settled = {t.ident for t in threading.enumerate()}
        await asyncio.gather(*(llm.ainvoke(f"again {i}") for i in range(1000)))
        assert {t.ident for t in threading.enumerate()} <= settled

    asyncio.run(main())
    assert sim.stats().connections_opened <= 64


def test_langchain_rate_limiter_adapter_drops_into_chat_openai(sim: SimulatorThread) -> None:
    limiter = RateLimiter(rpm=600, tpm=None)
    llm = ChatOpenAI(
        model="gpt-4o-mini",
        base_url=sim.base_url,
        api_key=API_KEY,
        timeout=10,
        rate_limiter=limiter.as_langchain(("sim", "gpt-4o-mini")),
    )
    assert llm.invoke("sync").content
    assert asyncio.run(llm.ainvoke("async")).content
    assert limiter.stats["acquired"] == 2


def test_the_api_key_never_reaches_the_logs(
    sim: SimulatorThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and the transport's included
    with ClientPool(pool_config()) as pool:
        llm = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)
        sim.push(Reply(status=503))  # a retry, logged
        assert llm.invoke("hello").content
        pool.embeddings(base_url=sim.base_url, api_key=API_KEY).embed_documents(["a", "b"])
        sim.push(Reply(status=401))  # a rejected key, logged and raised
        with pytest.raises(ApiKeyError) as info:
            llm.invoke("again")
        assert sim.stats().connections_open > 0
    # leaving the sync `with` closed the async clients the sync calls used, on their own loop
    deadline = time.monotonic() + 5
    while sim.stats().connections_open and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the server's counter until it sees the sockets close
    assert sim.stats().connections_open == 0
    assert API_KEY not in str(info.value)
    assert caplog.records  # the logs were captured...
    assert API_KEY not in caplog.text  # ...and hold no key
    assert API_KEY[-8:] not in caplog.text  # not even its tail
