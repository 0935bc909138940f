"""The simulator over real sockets, driven by the real openai SDK and raw HTTP."""

import asyncio
import base64
import json
import math
from collections.abc import AsyncIterator

import httpx
import numpy as np
import openai
import pytest

from rat_langchain.sim import (
    MAX_EMBEDDING_INPUTS,
    Reply,
    Simulator,
    SimulatorProcess,
    SimulatorThread,
)
from tests.conftest import API_KEY

USER = [{"role": "user", "content": "what is the capital of France"}]


@pytest.fixture
async def client(loop_sim: Simulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=loop_sim.base_url, api_key=API_KEY, max_retries=0, timeout=2.0
    ) as sdk:
        yield sdk


async def test_chat_plain_stream_and_usage(loop_sim: Simulator, client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert reply.choices[0].message.content.startswith("Simulated answer")
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0
    chunks = []
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    usage = None
    async for chunk in stream:
        if chunk.choices:
            chunks.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(chunks) == reply.choices[0].message.content
    assert usage is not None
    assert usage.completion_tokens == reply.usage.completion_tokens
    stats = loop_sim.stats()
    assert stats.count("chat", 200) == 2
    assert stats.completion_tokens == 2 * reply.usage.completion_tokens


async def test_tool_calls_and_json_schema(loop_sim: Simulator, client: openai.AsyncOpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "search",
                "parameters": {
                    "type": "object",
                    "properties": {"query": {"type": "string"}, "k": {"type": "integer"}},
                    "required": ["query", "k"],
                },
            },
        }
    ]
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=USER, tools=tools)
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "search"
    assert set(json.loads(call.function.arguments)) == {"query", "k"}
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    reply = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "City", "schema": schema, "strict": True},
        },
    )
    data = json.loads(reply.choices[0].message.content)
    assert isinstance(data["city"], str)
    assert isinstance(data["population"], int)


async def test_embeddings_float_base64_and_dimensions(
    loop_sim: Simulator, client: openai.AsyncOpenAI
) -> None:
    texts = ["red apple pie", "green apple tart", "stock market crash"]
    floats = await client.embeddings.create(
        model="text-embedding-3-small", input=texts, encoding_format="float"
    )
    b64 = await client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=texts, encoding_format="base64"
    )
    payload = b64.http_response.json()
    decoded = np.frombuffer(base64.b64decode(payload["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats.data[0].embedding, atol=1e-6)
    assert [d.index for d in floats.data] == [0, 1, 2]
    v = [np.array(d.embedding) for d in floats.data]
    assert len(v[0]) == 1536
    assert v[0] @ v[1] > v[0] @ v[2]
    small = await client.embeddings.create(
        model="text-embedding-3-large", input="x", dimensions=256
    )
    assert len(small.data[0].embedding) == 256
    models = await client.models.list()
    assert "text-embedding-3-small" in [m.id for m in models.data]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "text-embedding-3-small", "input": ""}, "input[0]"),
        ({"model": "text-embedding-3-small", "input": []}, "must not be empty"),
        ({"model": "text-embedding-3-small", "input": ["ok", "  ", ""]}, "input[2]"),
        (
            {"model": "text-embedding-3-small", "input": ["x"] * (MAX_EMBEDDING_INPUTS + 1)},
            "too long",
        ),
        ({"input": ["x"]}, "model parameter"),
        ({"model": "text-embedding-ada-002", "input": ["x"], "dimensions": 8}, "dimensions"),
    ],
)
async def test_embedding_validation_is_an_openai_shaped_400(
    loop_sim: Simulator, body: dict[str, object], fragment: str
) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{loop_sim.base_url}/embeddings",
            json=body,
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert fragment in error["message"]
    assert error["type"] == "invalid_request_error"


async def test_bad_json_missing_key_and_empty_messages(loop_sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=loop_sim.base_url) as http:
        auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        bad = await http.post("/chat/completions", content=b"{not json", headers=auth)
        assert bad.status_code == 400
        assert "parse the JSON" in bad.json()["error"]["message"]
        empty = await http.post(
            "/chat/completions", json={"model": "m", "messages": []}, headers=auth
        )
        assert empty.status_code == 400
        assert empty.json()["error"]["param"] == "messages"
        anonymous = await http.post("/chat/completions", json={"model": "m", "messages": USER})
        assert anonymous.status_code == 401
    stats = loop_sim.stats()
    assert stats.count("chat", 400) == 2
    assert stats.count("chat", 401) == 1


async def test_429_headers_are_parsed_by_the_openai_sdk(
    loop_sim: Simulator, client: openai.AsyncOpenAI
) -> None:
    loop_sim.configure(rpm=3)
    ok = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=USER)
    assert ok.headers["x-ratelimit-limit-requests"] == "3"
    assert ok.headers["x-ratelimit-remaining-requests"] == "2"
    await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    headers = info.value.response.headers
    assert info.value.code == "rate_limit_exceeded"
    for name in (
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ):
        assert name in headers
    # The SDK's own parser reads retry-after-ms first: 3 rpm refills one request in 20 s.
    parsed = client._parse_retry_after_header(headers)
    assert parsed is not None
    assert 19.0 < parsed <= 20.0
    assert int(headers["retry-after"]) == math.ceil(float(headers["retry-after-ms"]) / 1000)
    assert loop_sim.stats().count("chat", 429) == 1


async def test_tpm_limit_answers_too_large_and_window(
    loop_sim: Simulator, client: openai.AsyncOpenAI
) -> None:
    loop_sim.configure(tpm=100)
    with pytest.raises(openai.RateLimitError, match="Request too large"):
        await client.chat.completions.create(model="gpt-4o-mini", messages=USER, max_tokens=500)
    await client.chat.completions.create(model="gpt-4o-mini", messages=USER, max_tokens=60)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=USER, max_tokens=60)
    assert info.value.response.headers["x-ratelimit-limit-tokens"] == "100"


async def test_scripted_faults_reach_the_client_as_they_would_in_production(
    loop_sim: Simulator, client: openai.AsyncOpenAI
) -> None:
    loop_sim.push(
        Reply(status=503),
        Reply(fault="reset"),
        Reply(fault="malformed"),
        Reply(fault="hang"),
        Reply(status=429, error_type="insufficient_quota", error_code="insufficient_quota"),
        Reply(content="scripted!"),
    )
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    with pytest.raises(json.JSONDecodeError):  # how the SDK surfaces a broken body
        await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert info.value.code == "insufficient_quota"
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert reply.choices[0].message.content == "scripted!"
    stats = loop_sim.stats()
    assert stats.faults == {"reset": 1, "malformed": 1, "hang": 1}
    assert stats.count("chat", 503) == 1
    assert stats.count("chat", 200) == 1


async def test_fault_rates_are_honoured_within_statistical_bounds() -> None:
    n = 600
    rates = {"error_rate": 0.2, "unavailable_rate": 0.1, "malformed_rate": 0.1}
    async with Simulator(seed=7, **rates) as sim:
        async with httpx.AsyncClient(
            base_url=sim.base_url, limits=httpx.Limits(max_connections=20)
        ) as http:
            auth = {"Authorization": f"Bearer {API_KEY}"}
            body = {"model": "gpt-4o-mini", "messages": USER}
            gate = asyncio.Semaphore(20)

            async def one() -> None:
                async with gate:
                    await http.post("/chat/completions", json=body, headers=auth)

            async with asyncio.TaskGroup() as tg:
                for _ in range(n):
                    tg.create_task(one())
        stats = sim.stats()
    assert stats.count("chat") == n  # exact: every request counted once
    for status, rate in (("500", 0.2), ("503", 0.1)):
        sigma = math.sqrt(n * rate * (1 - rate))
        assert abs(stats.count("chat", int(status)) - n * rate) < 5 * sigma
    malformed = stats.faults.get("malformed", 0)
    assert abs(malformed - n * 0.1) < 5 * math.sqrt(n * 0.09)
    failed = stats.count("chat", 500) + stats.count("chat", 503) + malformed
    assert stats.count("chat", 200) == n - failed


async def test_counters_are_exact_for_connections_and_concurrency(loop_sim: Simulator) -> None:
    loop_sim.configure(latency_ms=50)
    release = asyncio.Event()
    async with httpx.AsyncClient(
        base_url=loop_sim.base_url, limits=httpx.Limits(max_connections=7)
    ) as http:
        auth = {"Authorization": f"Bearer {API_KEY}"}

        async def call() -> int:
            r = await http.post(
                "/chat/completions", json={"model": "m", "messages": USER}, headers=auth
            )
            return r.status_code

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(call()) for _ in range(21)]
        release.set()
    assert all(t.result() == 200 for t in tasks)
    stats = loop_sim.stats()
    assert stats.connections_opened == 7
    assert stats.peak_in_flight == 7
    assert stats.in_flight == 0
    assert stats.count("chat", 200) == 21


async def test_a_local_server_computes_its_slots_and_queues_the_rest(
    client: openai.AsyncOpenAI, loop_sim: Simulator
) -> None:
    """``slots``: as vLLM or Ollama, N requests computed at once, the rest wait their turn;
    nothing is refused and no rate-limit header is sent."""
    loop_sim.configure(slots=3, latency_ms=200)  # all 9 arrive before the first is answered
    answers = await asyncio.gather(
        *(
            client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=USER)
            for _ in range(9)
        )
    )
    assert all(a.status_code == 200 for a in answers)
    assert not any(h.startswith("x-ratelimit") for a in answers for h in a.headers)
    stats = loop_sim.stats()
    assert stats.count("chat", 200) == 9
    assert stats.peak_queued == 6  # 9 arrived together: 3 computed, 6 waited


def test_process_runner_and_control_endpoints() -> None:
    with SimulatorProcess(latency_ms=1) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key=API_KEY, max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        assert sim.stats().count("chat", 200) == 1
        sim.configure(rpm=1)  # a new limit starts with a full bucket: one request fits
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        sim.reset_stats()
        sim.configure(rpm=None)
        sim.push({"content": "from the script"})
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        assert reply.choices[0].message.content == "from the script"
        stats = sim.stats()
        assert stats.count() == 1
        assert stats.connections_opened == 0  # the SDK kept its socket alive across the reset
        with pytest.raises(ValueError, match="fault rates add up"):
            sim.configure(error_rate=0.8, hang_rate=0.8)
        client.close()


def test_thread_runner_serves_sync_clients(sim: SimulatorThread) -> None:
    client = openai.OpenAI(base_url=sim.base_url, api_key=API_KEY, max_retries=0)
    sim.push(Reply(content="hello from thread"))
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert reply.choices[0].message.content == "hello from thread"
    sim.configure(api_key="sk-other")
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert API_KEY not in str(info.value)
    client.close()


def test_json_mode_answers_typed_values_and_unknown_models_are_404(sim: SimulatorThread) -> None:
    """``with_structured_output(method="json_mode")`` failed on an integer field (every value
    was a string); a mistyped model name could not be caught offline."""
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    class Joke(BaseModel):
        setup: str
        punchline: str
        rating: int

    llm = ChatOpenAI(model="gpt-4o-mini", base_url=sim.base_url, api_key=API_KEY)
    joke = llm.with_structured_output(Joke, method="json_mode").invoke(
        "Tell a joke. Respond in JSON with 'setup', 'punchline' and 'rating' (an integer) keys"
    )
    assert isinstance(joke, Joke)
    assert joke.rating == 1
    sim.configure(models=["gpt-4o-mini", "text-embedding-3-small"])
    typo = ChatOpenAI(model="gpt-4o-mnii", base_url=sim.base_url, api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="gpt-4o-mnii") as caught:
        typo.invoke("hi")
    assert caught.value.code == "model_not_found"
    assert llm.invoke("hi").content  # a known model still answers
