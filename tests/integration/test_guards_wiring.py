"""One place builds the guards from a config, and every entry point gets them from it: the
Redis backend, shared breaker state, metrics and ``RAT_*`` overrides reach ``resilient()``, the
batcher, the executor and the orchestrator exactly as they reach the pool."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.runnables import RunnableLambda

from rat_langchain import (
    ClientPool,
    LLMBatcher,
    Orchestrator,
    ParallelPlanExecutor,
    RatConfig,
    RedisRateLimiter,
    SharedBreakerState,
    resilient,
)
from rat_langchain.guards import Key, build_guards
from tests.conftest import RedisServer

ENV = {"RAT_PERFORMANCE__PARALLEL_EXECUTION__MAX_PARALLEL_STEPS": "3"}


async def test_resilient_uses_the_shared_redis_limiter_and_reports_metrics(
    redis_server: RedisServer,
) -> None:
    config = RatConfig.from_dict(
        {
            "performance": {
                "rate_limiting": {"backend": "redis", "redis_url": redis_server.url},
                "circuit_breaker": {"share_open_state": True},
            }
        },
        env={},
    )
    guarded = resilient(RunnableLambda(lambda x: x * 2), key="double", config=config)
    assert await guarded.ainvoke(21) == 42
    guard = guarded.guard
    assert isinstance(guard.limiter, RedisRateLimiter)
    assert guard.limiter.stats["redis_calls"] >= 1  # the quota was taken from Redis
    assert guard.breaker is not None
    assert isinstance(guard.breaker.shared, SharedBreakerState)
    assert guard.metrics is not None
    assert guard.metrics.snapshot()["series"]["double"]["calls"] == 1
    await guard.limiter.aclose()
    await guard.breaker.shared.aclose()


async def test_resilient_can_share_a_pools_guards(sim: Any) -> None:
    from tests.conftest import API_KEY, pool_config

    async with ClientPool(pool_config()) as pool:
        guarded = resilient(
            RunnableLambda(lambda x: x), key=(sim.base_url, "tool"), guards=pool.guards
        )
        await guarded.ainvoke(1)
        assert pool.metrics.series(sim.base_url, "tool")["calls"] == 1
        assert API_KEY  # the pool needed no endpoint for a plain runnable


def test_rat_environment_overrides_reach_every_from_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RAT_PERFORMANCE__PARALLEL_EXECUTION__MAX_PARALLEL_LLM_CALLS", "7")
    monkeypatch.setenv("RAT_PERFORMANCE__RETRIES__MAX_ATTEMPTS", "2")
    monkeypatch.setenv("RAT_PERFORMANCE__PARALLEL_EXECUTION__STEP_MAX_ATTEMPTS", "5")
    tools = {"echo": lambda text: text}
    executor = ParallelPlanExecutor.from_config(tools)
    assert executor.max_parallel_steps == 3
    assert executor.step_retry is not None
    assert executor.step_retry.max_attempts == 5
    batcher = LLMBatcher(RunnableLambda(lambda x: x))
    assert batcher.max_concurrency == 7
    assert batcher.runnable.guard.retry.max_attempts == 2  # type: ignore[attr-defined]
    orchestrator = Orchestrator.from_config(FakeListChatModel(responses=["{}"]), tools)
    assert orchestrator.executor.max_parallel_steps == 3
    assert build_guards().retry.max_attempts == 2


def test_a_guard_is_keyed_by_endpoint_and_model() -> None:
    guards = build_guards(RatConfig.from_dict({}, env={}))
    guard = guards.guard(("http://x/v1", "m"))
    assert guard.key == Key("http://x/v1", "m") == ("http://x/v1", "m")
    assert guard.endpoint == "http://x/v1"
    assert guard.breaker is guards.guard(Key("http://x/v1", "m")).breaker  # one per key
    assert str(guards.guard("name").key) == "name"


async def test_with_methods_return_new_objects(sim: Any) -> None:
    from tests.conftest import API_KEY, pool_config

    async with ClientPool(pool_config()) as pool:
        llm = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)
        other = llm.with_guards(None)
        assert other is not llm
        assert llm.guard is not None
        assert other.guard is None
        embeddings = pool.embeddings(base_url=sim.base_url, api_key=API_KEY)
        moved = embeddings.with_pool(pool)
        assert moved is not embeddings
        config = pool.config
        assert config.with_endpoint(base_url="http://y/v1") is not config
        assert config.endpoint.base_url != "http://y/v1"


async def test_metrics_show_learned_limits_window_and_concurrency(sim: Any) -> None:
    """Nothing configured but the endpoint: after a few calls the metrics say, per endpoint and
    model, the limits the server announced (x safety margin), the burst, where each comes from,
    and how many attempts were in flight."""
    import asyncio

    from rat_langchain.guards.key import tenant_of
    from tests.conftest import API_KEY

    sim.configure(rpm=6000, tpm=2_000_000)
    config = RatConfig.from_dict(
        {"endpoint": {"base_url": sim.base_url, "api_key": API_KEY}}, env={}
    )
    try:
        async with ClientPool(config) as pool:
            llm = pool.chat_model(model="gpt-4o-mini", max_tokens=5)
            await asyncio.gather(*(llm.ainvoke(f"hello {i}") for i in range(6)))
            snapshot = pool.metrics.snapshot()
            row = snapshot["limits"][f"{sim.base_url} gpt-4o-mini #{tenant_of(API_KEY)}"]
            margin = config.performance.rate_limiting.safety_margin
            assert row["requests"]["per_minute"] == pytest.approx(6000 * margin)
            assert row["tokens"]["per_minute"] == pytest.approx(2_000_000 * margin)
            assert row["requests"]["source"] == "announced"
            assert row["requests"]["burst_s"] >= 1.0
            series = snapshot["series"][f"{sim.base_url} gpt-4o-mini"]
            assert series["in_flight"] == 0
            assert series["max_in_flight"] >= 2  # six at once, throttled by nothing
            text = pool.metrics.to_prometheus()
            assert 'rat_limit_per_minute{endpoint="' in text
            assert 'dimension="requests"' in text
            assert "rat_limit_source{" in text
            assert "# TYPE rat_in_flight gauge" in text
    finally:
        sim.configure(rpm=None, tpm=None)
