"""What a ChatOpenAI user relies on: deadlines are DeadlineExceeded (a TimeoutError and a
RatError) from every entry point, a refused connection is a connection error, token counts work
offline, and structured output does not warn on every call."""

from __future__ import annotations

import asyncio
import socket
import time
import warnings
from collections.abc import Iterator

import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from pydantic import BaseModel

from rat_langchain import ClientPool, DeadlineExceeded, RatConfig, RatError, resilient
from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY


class Answer(BaseModel):
    text: str


@pytest.fixture
def slow_pool(sim: SimulatorThread) -> Iterator[ClientPool]:
    sim.configure(latency_ms=5000)
    config = RatConfig.from_dict(
        {
            "endpoint": {"base_url": sim.base_url, "api_key": API_KEY},
            "performance": {"retries": {"timeout_s": 0.3}, "rate_limiting": {"enabled": False}},
        },
        env={},
    )
    with ClientPool(config) as pool:
        yield pool


def test_deadlines_are_deadline_exceeded_from_every_entry_point(slow_pool: ClientPool) -> None:
    llm = slow_pool.chat_model()
    calls = {
        "invoke": lambda: llm.invoke("hi"),
        "ainvoke": lambda: asyncio.run(llm.ainvoke("hi")),
        "stream": lambda: list(llm.stream("hi")),
        "batch": lambda: llm.batch(["hi"]),
    }
    for name, call in calls.items():
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as caught:
            call()
        assert isinstance(caught.value, TimeoutError), name
        assert isinstance(caught.value, RatError), name
        assert time.monotonic() - started < 2.0, name  # not the 5 s the server would take


def test_a_sync_runnable_past_its_deadline_raises_after_it_returns() -> None:
    ran = []

    def slow(x: int) -> int:
        time.sleep(0.4)  # a sync step cannot be interrupted: it finishes, then the deadline
        ran.append(x)
        return x

    guarded = resilient(RunnableLambda(slow), timeout=0.1, limiter=None, breaker=None)
    with pytest.raises(DeadlineExceeded):
        guarded.invoke(1)
    assert ran == [1]


def test_a_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe closes
    config = RatConfig.from_dict(
        {
            "endpoint": {"base_url": f"http://127.0.0.1:{port}/v1", "api_key": API_KEY},
            "performance": {"retries": {"max_attempts": 1}, "rate_limiting": {"enabled": False}},
        },
        env={},
    )
    with ClientPool(config) as pool:
        with pytest.raises(openai.APIConnectionError) as caught:
            pool.chat_model().invoke("hi")
        assert not isinstance(caught.value, openai.APITimeoutError)
        assert "timed out" not in str(caught.value)


def test_token_counts_work_offline(sim: SimulatorThread) -> None:
    @tool
    def lookup(city: str) -> str:
        """Look up a city."""
        return city

    with ClientPool(RatConfig.from_dict({}, env={})) as pool:
        llm = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)
        assert llm.get_num_tokens("hello world") == 2
        messages = [SystemMessage("be brief"), HumanMessage("hello world")]
        plain = llm.get_num_tokens_from_messages(messages)
        assert plain == 3 + 2 * 3 + 2 + 2  # framing + two messages
        assert llm.get_num_tokens_from_messages(messages, tools=[lookup]) > plain + 10


def test_structured_output_does_not_warn_on_every_call(sim: SimulatorThread) -> None:
    with ClientPool(RatConfig.from_dict({}, env={})) as pool:
        llm = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)
        structured = llm.with_structured_output(Answer, method="json_schema")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            structured.invoke("hi")
            list(structured.stream("hi"))
        headers = [w for w in caught if "response headers" in str(w.message)]
        assert headers == []
