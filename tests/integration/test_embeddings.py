"""PooledOpenAIEmbeddings against the simulator: order, batching, dedupe, faults, validation."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import numpy as np
import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests

from rat_langchain import ClientPool, RatConfig
from rat_langchain.errors import MalformedResponseError
from rat_langchain.guards.key import Key, tenant_of
from rat_langchain.pool.embeddings import (
    EmbeddingInputError,
    EmbeddingResponseError,
    PooledOpenAIEmbeddings,
)
from rat_langchain.sim import Reply, SimulatorThread
from rat_langchain.sim._content import embed
from tests.conftest import API_KEY

MODEL = "text-embedding-3-small"


_POOLS: list[ClientPool] = []


@pytest.fixture(autouse=True)
def _close_pools() -> Iterator[None]:
    """Close every pool a test made, on every loop it used (the portal's included), so nothing
    is left for the garbage collector to find unclosed."""
    yield
    while _POOLS:
        asyncio.run(_POOLS.pop().aclose())


def _pool(**performance: object) -> ClientPool:
    sections: dict[str, object] = {
        "rate_limiting": {"enabled": False},
        "retries": {"initial_backoff_s": 0.01, "max_backoff_s": 0.05, "max_attempts": 6},
        **performance,
    }
    pool = ClientPool(RatConfig.from_dict({"performance": sections}, env={}))
    _POOLS.append(pool)
    return pool


def _emb(
    sim: SimulatorThread, pool: ClientPool | None = None, **kwargs: object
) -> PooledOpenAIEmbeddings:
    return (pool or _pool()).embeddings(MODEL, base_url=sim.base_url, api_key=API_KEY, **kwargs)


def test_5000_texts_in_order_in_at_most_50_requests(sim: SimulatorThread) -> None:
    texts = [f"document {i} about topic {i % 37} and item {i * 7919 % 1000}" for i in range(5000)]
    emb = _emb(sim)
    vectors = asyncio.run(emb.aembed_array(texts))
    assert vectors.shape == (5000, 1536)
    expected = np.stack([embed(t, 1536) for t in texts])  # what one-by-one embedding gives
    assert np.allclose(vectors, expected, atol=1e-6)
    assert sim.stats().count("embeddings") <= math.ceil(5000 / 100)
    one_by_one = [emb.embed_query(texts[i]) for i in (0, 1234, 4999)]
    for row, i in zip(one_by_one, (0, 1234, 4999), strict=True):
        assert np.allclose(row, vectors[i], atol=1e-6)


@pytest.mark.parametrize(("texts", "requests"), [(3200, 16), (800, 8), (40_000, 40)])
def test_with_no_limits_known_a_call_spreads_over_the_requests_in_flight(
    sim: SimulatorThread, texts: int, requests: int
) -> None:
    """Zero configuration on a server that announced nothing yet: the texts go as one request
    per slot in flight (16), 100 to 1000 texts each (OpenAIEmbeddings' chunk size). Before,
    the open limiter's starting 450 RPM sized them: 100 a request, 200 requests for 20,000
    texts where OpenAIEmbeddings sends 20."""
    pool = ClientPool(RatConfig.from_dict({}, env={}))  # the limiter on, on auto
    _POOLS.append(pool)
    batch = [f"t{i}" for i in range(texts)]
    vectors = asyncio.run(_emb(sim, pool).aembed_array(batch))
    assert vectors.shape == (texts, 1536)
    assert sim.stats().count("embeddings") == requests


def test_duplicates_are_embedded_once_and_results_keep_input_order(sim: SimulatorThread) -> None:
    texts = ["alpha", "beta", "alpha", "gamma", "beta", "alpha"]
    vectors = _emb(sim).embed_documents(texts)
    assert sim.stats().embedding_inputs == 3
    assert vectors[0] == vectors[2] == vectors[5]
    assert vectors[1] == vectors[4]
    assert vectors[0] != vectors[1]


def test_batches_run_concurrently(sim: SimulatorThread) -> None:
    sim.configure(latency_ms=50)
    texts = [f"text {i}" for i in range(400)]
    _emb(sim, batch_size=50, max_concurrent_batches=4).embed_documents(texts)
    stats = sim.stats()
    assert stats.count("embeddings") == 8
    assert stats.peak_in_flight == 4


def test_batching_switched_off_sends_one_text_per_request_one_at_a_time(
    sim: SimulatorThread,
) -> None:
    sim.configure(latency_ms=5)
    pool = _pool(batch_embeddings={"enabled": False})
    vectors = _emb(sim, pool).embed_documents([f"text {i}" for i in range(12)])
    assert len(vectors) == 12
    stats = sim.stats()
    assert stats.count("embeddings") == 12
    assert stats.peak_in_flight == 1


def test_a_rejected_batch_is_halved_until_the_bad_input_is_found(sim: SimulatorThread) -> None:
    sim.configure(invalid_marker="<<bad>>")
    texts = [f"fine text {i}" for i in range(300)]
    texts[3] = "this one is <<bad>>"
    texts[250] = "<<bad>> as well"
    with pytest.raises(EmbeddingInputError) as info:
        _emb(sim, batch_size=100).embed_documents(texts)
    error = info.value
    assert set(error.failed) == {3, 250}
    assert "HTTP 400" in error.failed[3]
    assert error.vectors[3] is None
    assert error.vectors[250] is None
    good = [v for i, v in enumerate(error.vectors) if i not in (3, 250)]
    assert all(v is not None and len(v) == 1536 for v in good)
    assert np.allclose(error.vectors[0], embed(texts[0], 1536), atol=1e-6)


def test_malformed_200_bodies_are_retried_counted_and_finally_named(sim: SimulatorThread) -> None:
    pool = _pool()
    sim.push(Reply(fault="malformed"), Reply(fault="malformed"), endpoint="embeddings")
    vectors = _emb(sim, pool).embed_documents(["one", "two"])  # two bad answers, then a good one
    assert len(vectors) == 2
    assert sim.stats().count("embeddings") == 3
    series = pool.metrics.series(sim.base_url, MODEL)
    assert series["retries"] == 2
    key = Key(sim.base_url, MODEL, tenant_of(API_KEY))  # the pool's key is its tenant
    breaker = pool.breakers.get(key) if pool.breakers else None
    assert breaker is not None
    assert breaker.calls["failure"] == 2  # the endpoint's fault, not a success
    sim.push(*[Reply(fault="malformed")] * 6, endpoint="embeddings")
    with pytest.raises(EmbeddingResponseError, match="not JSON") as caught:
        _emb(sim, pool).embed_documents(["three"])
    assert isinstance(caught.value, MalformedResponseError)
    assert pool.metrics.series(sim.base_url, MODEL)["errors"] == {"MalformedResponseError": 1}


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (Reply(vectors=[[0.1] * 1536, [float("nan")] * 1536]), "NaN"),
        (Reply(vectors=[[0.1] * 1536, [0.1] * 12]), "12 dimensions"),
        (Reply(vectors=[[0.1] * 1536]), "asked for 2 vectors"),
    ],
)
def test_bad_server_vectors_raise_a_clear_error(
    sim: SimulatorThread, reply: Reply, match: str
) -> None:
    sim.push(reply, endpoint="embeddings")
    with pytest.raises(EmbeddingResponseError, match=match):
        _emb(sim).embed_documents(["one", "two"])


@pytest.mark.parametrize(
    ("texts", "error", "match"),
    [
        (["ok", ""], ValueError, "text 1 is empty"),
        (["ok", "   \n"], ValueError, "text 1 is empty"),
        (["ok", 42], TypeError, "text 1 is an int"),
        ("just one string", TypeError, "list of strings"),
    ],
)
def test_bad_input_is_rejected_before_anything_is_sent(
    sim: SimulatorThread, texts: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        _emb(sim).embed_documents(texts)  # type: ignore[arg-type]
    assert sim.stats().count("embeddings") == 0


def test_long_text_is_averaged_or_rejected(sim: SimulatorThread) -> None:
    long_text = " ".join(f"word{i}" for i in range(400))
    averaged = _emb(sim, context_length=100).embed_query(long_text)
    assert abs(float(np.linalg.norm(averaged)) - 1.0) < 1e-5
    assert sim.stats().embedding_inputs > 1  # it was sent in chunks
    with pytest.raises(ValueError, match=r"text 0 has \d+ tokens, over the model's context of 100"):
        _emb(sim, context_length=100, long_text="reject").embed_documents([long_text])


def test_faults_and_429s_are_absorbed(sim: SimulatorThread) -> None:
    sim.configure(error_rate=0.10, reset_rate=0.05, seed=3)
    too_many = Reply(
        status=429,
        error_type="requests",
        error_code="rate_limit_exceeded",
        headers={"retry-after-ms": "20"},
    )
    sim.push(too_many, too_many, too_many, endpoint="embeddings")  # the first three requests
    texts = [f"doc {i}" for i in range(1000)]
    vectors = asyncio.run(_emb(sim, batch_size=20).aembed_array(texts))
    assert vectors.shape == (1000, 1536)
    assert np.allclose(vectors[999], embed(texts[999], 1536), atol=1e-6)
    stats = sim.stats()
    assert stats.count("embeddings", 500) + stats.faults.get("reset", 0) > 0
    assert stats.count("embeddings", 429) == 3
    assert stats.embedding_inputs >= 1000


def test_dimensions_and_secret_repr(sim: SimulatorThread) -> None:
    emb = _emb(sim, dimensions=256)
    assert len(emb.embed_query("x")) == 256
    assert API_KEY not in repr(emb)


@pytest.fixture(scope="module")
def standard_sim() -> Iterator[SimulatorThread]:
    with SimulatorThread() as server:
        TestStandardEmbeddings.base_url = server.base_url
        yield server


@pytest.mark.usefixtures("standard_sim")
class TestStandardEmbeddings(EmbeddingsIntegrationTests):
    base_url = ""

    @property
    def embeddings_class(self) -> type[PooledOpenAIEmbeddings]:
        return PooledOpenAIEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, object]:
        return {"model": MODEL, "base_url": self.base_url, "api_key": API_KEY}


def test_embeddings_without_a_pool_keep_the_configs_key(sim: SimulatorThread) -> None:
    """The config's endpoint.api_key reaches the server (it was masked to '**********' on the
    way to the default pool, and the server answered 401)."""
    sim.configure(api_key="sk-only-this-one")
    config = RatConfig.from_dict(
        {
            "endpoint": {"base_url": sim.base_url, "api_key": "sk-only-this-one"},
            "performance": {"rate_limiting": {"enabled": False}},
        },
        env={},
    )
    emb = PooledOpenAIEmbeddings(model=MODEL, config=config)
    assert len(emb.embed_query("hello")) == 1536
    other = config.with_endpoint(api_key="sk-another")
    assert PooledOpenAIEmbeddings(model=MODEL, config=other).pool is not emb.pool


async def test_concurrent_queries_share_requests_under_a_request_limit(
    sim: SimulatorThread,
) -> None:
    """300 users' queries at once against 600 RPM enforced per second (10 a second): one
    request each would take 30 s; they leave together (issue 22), with no 429, each caller
    getting its own text's vector."""
    sim.configure(rpm=600, limit_window_s=1.0, latency_ms=20)
    pool = ClientPool(
        RatConfig.from_dict({"performance": {"rate_limiting": {"rpm_limit": 600}}}, env={})
    )
    _POOLS.append(pool)
    emb = _emb(sim, pool)
    texts = [f"question {i} about item {i * 31 % 97}" for i in range(300)]
    vectors = await asyncio.gather(*(emb.aembed_query(t) for t in texts))
    stats = sim.stats()
    assert stats.count("embeddings", 429) == 0
    assert stats.count("embeddings", 200) <= 12  # 300 requests without coalescing
    for text, vector in zip(texts, vectors, strict=True):
        assert np.allclose(vector, embed(text, 1536), atol=1e-6)
