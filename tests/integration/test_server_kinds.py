"""The server kinds a client meets, played by the simulator over a socket: the guards must not
stall on any of them, and where a server announces its limits, they are learned."""

from __future__ import annotations

import time
from typing import Any

from rat_langchain import ClientPool, RatConfig
from rat_langchain.guards import Key
from rat_langchain.guards.key import tenant_of
from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY


def _pool(sim: SimulatorThread, **retries: object) -> ClientPool:
    return ClientPool(
        RatConfig.from_dict(
            {
                "endpoint": {"base_url": sim.base_url, "api_key": API_KEY},
                "performance": {
                    "rate_limiting": {"rpm_limit": 6000},
                    "retries": {"initial_backoff_s": 0.05, "max_attempts": 8, **retries},
                },
            },
            env={},
        )
    )


def test_a_lying_server_never_stalls_a_key(sim: SimulatorThread) -> None:
    """remaining = -10^9 on every answer, retry-after = 100000 s on every 429: each call still
    ends within max_server_wait_s of waiting."""
    sim.configure(rpm=120, limit_window_s=1.0, lying_headers=True)  # 2 requests per second
    with _pool(sim, max_server_wait_s=0.5) as pool:
        llm = pool.chat_model()
        started = time.monotonic()
        for _ in range(6):
            assert llm.invoke("hi").content
        assert time.monotonic() - started < 8.0
    assert sim.stats().count("chat", 429) >= 1  # the server did refuse, and lie


def test_azure_style_and_silent_servers_are_served(sim: SimulatorThread) -> None:
    for style, retry_after in (("azure", True), ("none", False)):
        sim.configure(
            rpm=600,
            limit_window_s=1.0,
            limit_style="fixed_window",
            limit_headers=style,
            retry_after=retry_after,
        )
        sim.reset_stats()
        with _pool(sim) as pool:
            llm = pool.chat_model()
            answers = llm.batch(["hi"] * 30)
        assert len(answers) == 30, style
        assert sim.stats().count("chat", 200) == 30, style


def test_with_nothing_configured_the_limits_are_learned_from_the_server(
    sim: SimulatorThread,
) -> None:
    sim.configure(rpm=6000, tpm=2_000_000)  # far above the starting 500 / 200k
    config = RatConfig.from_dict(
        {"endpoint": {"base_url": sim.base_url, "api_key": API_KEY}}, env={}
    )
    with ClientPool(config) as pool:
        llm = pool.chat_model()
        llm.invoke("hi")
        limiter: Any = pool.limiter
        state = limiter._state(Key(sim.base_url, llm.model_name, tenant_of(API_KEY)))
        assert state.requests.per_minute == 6000 * 0.9
        assert state.tokens.per_minute == 2_000_000 * 0.9


async def test_a_server_that_counts_requests_in_flight_is_learned(sim: SimulatorThread) -> None:
    """No headers, no retry-after, at most 4 requests answered at once (a self-hosted model's
    queue): nothing configured, 30 calls 20 at a time all succeed, with few 429s (whether the
    rate or the concurrency limit settles it: tests/unit/test_learn.py pins each)."""
    sim.configure(max_in_flight=4, latency_ms=50, limit_headers="none", retry_after=False)
    answers = await _calls_at_zero_config(sim, 30, 20)
    assert not [a for a in answers if isinstance(a, BaseException)]
    stats = sim.stats()
    assert stats.count("chat", 200) == 30
    assert stats.count("chat", 429) <= 10  # the first burst, and a probe or two


async def test_a_silent_per_minute_bucket_past_its_burst_fails_no_call(
    sim: SimulatorThread,
) -> None:
    """Issue 32: a gateway that says nothing (no headers, no retry-after) and holds a
    per-minute bucket: 300 at once, then 30 a second. 100 callers make 500 calls, nothing
    configured. Its refusals past the burst came with the learned window full and were read as
    the window's: retried at once, unpaused, into the same wall, while the rate stayed at
    thousands a minute; about 80 calls in 500 spent their attempts (plain ChatOpenAI fails as
    many). Now a key refused more than it is answered backs off, and its rate drops to what
    the server answered (tests/unit/test_learn.py pins the rule)."""
    sim.configure(
        rpm=1800, limit_window_s=10.0, latency_ms=100, limit_headers="none", retry_after=False
    )
    answers = await _calls_at_zero_config(sim, 500, 100)
    failed = [a for a in answers if isinstance(a, BaseException)]
    assert not failed, f"{len(failed)} of 500 failed: {failed[0]!r}"
    # about 120 on an idle machine; 268 once in CI on a loaded one, where 429s the limiter
    # holds are retried past max_attempts (plain: 320, for 80 failed)
    assert sim.stats().count("chat", 429) <= 300


async def test_a_pool_started_again_begins_from_what_the_last_one_learned(
    sim: SimulatorThread,
) -> None:
    """Issue 33: limits learned by one pool are saved when it closes, under the user cache dir
    (here a test's own), and the next pool for the same endpoint, model and key starts from
    them: the announced limits before any answer, the window of ten off."""
    sim.configure(rpm=6000, tpm=2_000_000)
    config = RatConfig.from_dict(
        {"endpoint": {"base_url": sim.base_url, "api_key": API_KEY}}, env={}
    )
    async with ClientPool(config) as pool:
        llm = pool.chat_model()
        await llm.ainvoke("hi")
        key = Key(sim.base_url, llm.model_name, tenant_of(API_KEY))
        assert pool.limiter is not None
        learned = pool.limiter.limits()[key]
    saved = _saved_limits()
    assert saved, "nothing saved under the cache dir"
    assert API_KEY not in saved
    async with ClientPool(config) as again:
        limiter: Any = again.limiter
        state = limiter._state(key)  # made now, from the file: before any call
        assert state.requests.per_minute == learned["requests"]["per_minute"]
        assert state.tokens.per_minute == learned["tokens"]["per_minute"]
        assert state.concurrency is None or state.concurrency.limit is None  # no window of 10


def _saved_limits() -> str:
    """The learned-limits file in this test's cache dir (conftest's), or ""."""
    import os
    from pathlib import Path

    found = list(Path(os.environ["XDG_CACHE_HOME"]).glob("**/learned_limits.json"))
    return found[0].read_text() if found else ""


async def _calls_at_zero_config(sim: SimulatorThread, calls: int, at_once: int) -> list[Any]:
    """``calls`` chat calls, ``at_once`` at a time, through a pool with nothing configured but
    the endpoint: each answer, or the exception it raised."""
    import asyncio

    config = RatConfig.from_dict(
        {"endpoint": {"base_url": sim.base_url, "api_key": API_KEY}}, env={}
    )
    async with ClientPool(config) as pool:
        llm = pool.chat_model(max_tokens=5)
        gate = asyncio.Semaphore(at_once)

        async def call(i: int) -> Any:
            async with gate:
                return await llm.ainvoke(f"question {i}")

        return await asyncio.gather(*(call(i) for i in range(calls)), return_exceptions=True)


async def test_a_silent_token_bucket_fails_no_embedding(sim: SimulatorThread) -> None:
    """Issue 32: embedding a corpus at zero config against a gateway that limits tokens per
    minute as a bucket and says nothing (no headers, no retry-after). Requests of a thousand
    texts were refused four times in a row while the limiter learned the rate, and the whole
    call failed (bench_embed_limit: one call in two). 429s the limiter holds are now retried
    for up to max_server_wait_s, whatever max_attempts says."""
    sim.configure(
        tpm=240_000, limit_window_s=5.0, latency_ms=20, limit_headers="none", retry_after=False
    )
    config = RatConfig.from_dict(
        {"endpoint": {"base_url": sim.base_url, "api_key": API_KEY}}, env={}
    )
    texts = [f"document {i} about topic {i % 97} and item {i * 7919 % 1000}" for i in range(3000)]
    async with ClientPool(config) as pool:
        vectors = await pool.embeddings("text-embedding-3-small").aembed_documents(texts)
    assert len(vectors) == len(texts)
    assert sim.stats().count("embeddings", 429) >= 1  # the server did refuse
