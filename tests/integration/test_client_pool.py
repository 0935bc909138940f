"""ClientPool over real sockets: pooling bounds, warm reuse, per-loop clients, secrecy."""

import asyncio
import gc
import logging
import threading

import httpx2
import openai
import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel

from rat_langchain import ClientPool, ConfigError, PoolClosedError, RatConfig
from rat_langchain.errors import ApiKeyError
from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY, pool_config

TRANSPORTS = ["aiohttp", "sdk"]


def _chain(pool: ClientPool, sim: SimulatorThread):  # type: ignore[no-untyped-def]
    llm = pool.chat_model(model="gpt-4o-mini", base_url=sim.base_url, api_key=API_KEY)
    return ChatPromptTemplate.from_messages([("user", "{q}")]) | llm | StrOutputParser()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_500_concurrent_calls_stay_within_the_connection_limit_and_reuse_warm_sockets(
    sim: SimulatorThread, transport: str
) -> None:
    pool = ClientPool(pool_config(transport=transport, max_connections=50))
    chain = _chain(pool, sim)
    inputs = [{"q": f"question {i}"} for i in range(500)]

    async def rounds() -> tuple[list[str], int, list[str], int]:
        first = await chain.abatch(inputs, config={"max_concurrency": 500})
        after_first = sim.stats().connections_opened
        second = await chain.abatch(inputs, config={"max_concurrency": 500})
        return first, after_first, second, sim.stats().connections_opened

    first, opened_first, second, opened_total = asyncio.run(rounds())
    assert len(first) == len(second) == 500
    assert all(answer.startswith("Simulated answer") for answer in first + second)
    assert sim.stats().peak_in_flight <= 50
    assert opened_first <= 50
    assert opened_total == opened_first  # the warm pool opened nothing new
    assert sim.stats().count("chat", 200) == 1000


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_thread_count_does_not_grow_with_concurrency(sim: SimulatorThread, transport: str) -> None:
    pool = ClientPool(pool_config(transport=transport, max_connections=100))
    client = pool.async_client(base_url=sim.base_url, api_key=API_KEY)
    peaks: dict[int, int] = {}

    async def run(concurrency: int) -> None:
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                peaks[concurrency] = max(peaks.get(concurrency, 0), threading.active_count())
                await asyncio.sleep(0)

        async def call(i: int) -> None:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": str(i)}]
            )

        async with asyncio.TaskGroup() as tg:
            sampler = tg.create_task(sample())
            async with asyncio.TaskGroup() as calls:
                for i in range(concurrency):
                    calls.create_task(call(i))
            stop.set()
            await sampler

    async def main() -> None:
        await run(5)
        await run(500)

    baseline = threading.active_count()
    asyncio.run(main())
    assert peaks[5] == baseline
    assert peaks[500] == baseline  # no thread per request, no executor growth


def test_asyncio_run_three_times_with_one_model(sim: SimulatorThread) -> None:
    """langchain-ai/langchain#35783: a cached async client breaks the second asyncio.run."""
    pool = ClientPool(pool_config())
    llm = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)
    http = pool._http
    assert http is not None
    for i in range(3):
        answer = asyncio.run(llm.ainvoke(f"round {i}"))
        assert f"round {i}".split()[0] in answer.content
        # the loop's pooled client was closed when asyncio.run shut that loop down
        assert http._per_loop.loops == 0
    assert http._per_loop.created == 3
    assert sim.stats().count("chat", 200) == 3


def test_langchain_objects_work_sync_async_stream_structured(sim: SimulatorThread) -> None:
    pool = ClientPool(pool_config())
    llm = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)
    assert llm.invoke("hello").content.startswith("Simulated")
    assert "".join(chunk.content for chunk in llm.stream("hello stream")).startswith("Simulated")

    class City(BaseModel):
        name: str
        population: int

    structured = llm.with_structured_output(City)

    async def main() -> None:
        parts = [chunk.content async for chunk in llm.astream("async stream")]
        assert "".join(parts).startswith("Simulated")
        city = await structured.ainvoke("tell me about Paris")
        assert isinstance(city, City)
        emb = pool.embeddings(base_url=sim.base_url, api_key=API_KEY)
        vectors = await emb.aembed_documents(["alpha beta", "beta gamma"])
        assert len(vectors) == 2
        assert len(vectors[0]) == 1536
        assert len(await emb.aembed_query("alpha")) == 1536

    asyncio.run(main())
    emb = pool.embeddings(base_url=sim.base_url, api_key=API_KEY)
    assert len(emb.embed_documents(["one", "two", "three"])) == 3
    pool.close()


def test_models_share_one_client_per_endpoint_and_always_have_a_timeout(
    sim: SimulatorThread,
) -> None:
    pool = ClientPool(pool_config(request_timeout_s=7.0))
    a = pool.chat_model(model="gpt-4o-mini", base_url=sim.base_url, api_key=API_KEY)
    b = pool.chat_model(model="gpt-4o", base_url=sim.base_url, api_key=API_KEY, temperature=0)
    assert a.root_async_client is b.root_async_client
    assert a.async_client._resource is a.root_async_client.chat.completions  # see pool._direct
    assert a.root_client is b.root_client
    other_key = pool.chat_model(base_url=sim.base_url, api_key="sk-another-key")
    assert other_key.root_async_client is not a.root_async_client
    assert a.request_timeout is not None
    assert a.root_async_client.timeout.read == 7.0


def test_pooling_disabled_gives_langchain_default_objects_with_a_timeout(
    sim: SimulatorThread,
) -> None:
    pool = ClientPool(pool_config(enabled=False))
    a = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)
    b = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)
    assert a.request_timeout is not None
    assert a.invoke("x").content
    assert a.root_client is not b.root_client


def test_user_http_client_is_used_as_given(sim: SimulatorThread) -> None:
    seen: list[str] = []

    async def hook(request: httpx2.Request) -> None:
        seen.append(str(request.url))

    async def main() -> None:
        async with httpx2.AsyncClient(event_hooks={"request": [hook]}) as http:
            pool = ClientPool(pool_config(), http_client=http)
            assert pool.transport == "user"
            llm = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)
            await llm.ainvoke("hi")
            await pool.aclose()
            assert not http.is_closed  # the user's client is the user's to close

    asyncio.run(main())
    assert seen
    assert seen[0].endswith("/chat/completions")


async def test_closed_pool_refuses_new_work(sim: SimulatorThread) -> None:
    async with ClientPool(pool_config()) as pool:
        client = pool.async_client(base_url=sim.base_url, api_key=API_KEY)
        await client.models.list()
    assert pool.closed
    with pytest.raises(PoolClosedError, match="create a new"):
        pool.async_client(base_url=sim.base_url, api_key=API_KEY)
    with pytest.raises(PoolClosedError):
        await client.models.list()


def test_endpoint_comes_from_environment_or_fails_clearly(
    sim: SimulatorThread, monkeypatch: pytest.MonkeyPatch, no_openai_env: None
) -> None:
    pool = ClientPool(pool_config())
    with pytest.raises(ConfigError, match=r"endpoint\.api_key.*OPENAI_API_KEY"):
        pool.chat_model()
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
    assert pool.chat_model().invoke("from env").content
    config = RatConfig.from_dict({"endpoint": {"base_url": "http://127.0.0.1:1/v1"}}, env={})
    assert str(ClientPool(config).async_client().base_url).startswith("http://127.0.0.1:1/v1")


def test_api_key_never_appears_in_reprs_logs_or_errors(
    sim: SimulatorThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pool = ClientPool(pool_config())
    llm = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)
    emb = pool.embeddings(base_url=sim.base_url, api_key=API_KEY)
    llm.invoke("hello")
    asyncio.run(llm.ainvoke("hello"))
    sim.configure(api_key="sk-the-server-wants-another")
    with pytest.raises(ApiKeyError, match="OPENAI_API_KEY") as info:
        llm.invoke("hello")
    cause = info.value.__cause__
    assert isinstance(cause, openai.AuthenticationError)
    texts = [repr(pool), str(pool), repr(llm), str(llm), repr(emb), caplog.text, str(info.value)]
    texts += [repr(info.value), str(cause), repr(cause), str(cause.body)]
    for text in texts:
        assert API_KEY not in text
    assert "key=" in repr(pool)  # a fingerprint tells endpoints apart instead


def test_unclosed_loop_clients_do_not_leak_loops(sim: SimulatorThread) -> None:
    pool = ClientPool(pool_config())
    client = pool.async_client(base_url=sim.base_url, api_key=API_KEY)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(client.models.list())
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    del loop
    gc.collect()
    assert pool._http is not None
    assert pool._http._per_loop.loops == 0


def test_an_unreachable_endpoint_is_named_in_the_error() -> None:
    """The SDK's "Connection error." after the retries said neither where nor why."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = RatConfig.from_dict(
        {
            "endpoint": {"base_url": f"http://127.0.0.1:{port}/v1", "api_key": "sk-x"},
            "performance": {"retries": {"max_attempts": 1}},
        },
        env={},
    )
    with ClientPool(config) as pool, pytest.raises(openai.APIConnectionError) as caught:
        pool.chat_model().invoke("hi")
    message = str(caught.value)
    assert f"127.0.0.1:{port}/v1/chat/completions" in message
    assert "sk-x" not in message


def test_sdk_clients_and_embedding_queues_are_bounded_by_max_keys(sim: SimulatorThread) -> None:
    """Every distinct API key kept an AsyncOpenAI and a sync OpenAI, and every model an
    embedding queue, for ever: 300 tenants or model names (user input in a multi-tenant
    service) were 300 of each. They are bounded as the guards' state is (keys.max_keys)."""
    pool = ClientPool(pool_config(performance={"keys": {"max_keys": 20}}))
    first = pool.chat_model(base_url=sim.base_url, api_key="sk-tenant-first")

    async def many() -> None:
        for i in range(60):
            emb = pool.embeddings(model=f"m{i}", base_url=sim.base_url, api_key=f"sk-t{i}")
            await emb.aembed_query("x")
            await pool.chat_model(base_url=sim.base_url, api_key=f"sk-t{i}").ainvoke("x")
        assert all(len(queues) <= 20 for queues in pool.coalescers.values())
        assert len(pool._async) <= 20
        # a model made before its client was forgotten still works, on the client it holds
        assert (await first.ainvoke("still there")).content

    asyncio.run(many())
    for i in range(60):
        pool.sync_client(base_url=sim.base_url, api_key=f"sk-s{i}")
    assert len(pool._sync) <= 20
    pool.close()
