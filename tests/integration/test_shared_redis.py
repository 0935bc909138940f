"""RedisRateLimiter and SharedBreakerState against a real redis-server on a free port.

Two limiter (or breaker-state) objects stand for two processes: they share nothing but Redis.
Limits are chosen so that refill during a test is negligible (one request per 10 s).
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio

from rat_langchain import CircuitBreaker, CircuitOpenError
from rat_langchain.guards.breaker import Outcome, State
from rat_langchain.guards.key import Key
from rat_langchain.guards.redis import (
    RateLimiterUnavailable,
    RedisRateLimiter,
    SharedBreakerState,
)
from tests.conftest import RedisServer

KEY = ("http://sim/v1", "gpt-4o-mini")


def limiter(url: str, **kwargs: object) -> RedisRateLimiter:
    settings: dict[str, object] = {"safety_margin": 1.0, "burst_s": 10.0, "timeout_s": 0.5}
    settings.update(kwargs)
    return RedisRateLimiter(url=url, **settings)  # type: ignore[arg-type]


async def test_two_processes_share_one_request_budget(redis_server: RedisServer) -> None:
    a = limiter(redis_server.url, rpm=12, tpm=None)  # bucket of 2 requests, 1 per 5 s
    b = limiter(redis_server.url, rpm=12, tpm=None)
    assert a.try_acquire(KEY) is not None
    assert b.try_acquire(KEY) is not None
    assert a.try_acquire(KEY) is None  # the budget is shared: both slots are gone
    assert b.try_acquire(KEY) is None
    assert (await asyncio.gather(a.aclose(), b.aclose())) == [None, None]


async def test_both_buckets_are_charged_together_or_not_at_all(redis_server: RedisServer) -> None:
    a = limiter(redis_server.url, rpm=12, tpm=6000)  # 2 requests, 1000 tokens per 10 s
    b = limiter(redis_server.url, rpm=12, tpm=6000)
    assert a.try_acquire(KEY, tokens=900) is not None
    assert b.try_acquire(KEY, tokens=200) is None  # tokens short: the request slot is kept
    assert b.try_acquire(KEY, tokens=100) is not None  # ... and used here
    await a.aclose()
    await b.aclose()


async def test_reconcile_and_pause_reach_the_other_process(redis_server: RedisServer) -> None:
    a = limiter(redis_server.url, rpm=60, tpm=6000)  # 10 requests, 1000 tokens
    b = limiter(redis_server.url, rpm=60, tpm=6000)
    reservation = await a.acquire(KEY, tokens=1000)
    assert b.try_acquire(KEY, tokens=500) is None
    reservation.reconcile(100)  # the call used 100: 900 go back to the shared bucket
    await a.flush()
    assert b.try_acquire(KEY, tokens=800) is not None
    a.pause(KEY, 30)  # a 429 seen by a pauses b too
    await a.flush()
    assert b.try_acquire(KEY, tokens=1) is None
    await a.aclose()
    await b.aclose()


async def test_waiting_for_the_shared_bucket_and_backpressure(redis_server: RedisServer) -> None:
    fast = limiter(redis_server.url, rpm=600, tpm=None, burst_s=0.1, max_queue_wait_s=5.0)
    # a bucket of one request refilled every 100 ms: the second caller waits for the refill
    first = await fast.acquire(KEY)
    second = await fast.acquire(KEY)
    assert first.key == second.key == KEY
    assert fast.stats["waited"] == 1
    slow = limiter(redis_server.url, rpm=6, tpm=None, max_queue_wait_s=1.0)
    await slow.acquire(("x", "m"))
    with pytest.raises(Exception, match="would wait too long"):
        await slow.acquire(("x", "m"))  # 10 s away: refused at once
    await fast.aclose()
    await slow.aclose()


async def test_redis_outage_degrades_to_local_buckets_and_recovers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    shared = limiter(redis_server.url, rpm=600, tpm=None, retry_s=0.0, timeout_s=0.3)
    await shared.acquire(KEY)
    assert not shared.degraded
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="rat_langchain.guards.redis"):
        async with asyncio.timeout(5):  # no call hangs on a dead Redis
            await shared.acquire(KEY)
            # the local buckets start empty (no burst on top of what the shared bucket spent
            # this window): nothing now, a request as soon as one has refilled
            assert shared.try_acquire(KEY) is None
            await shared.acquire(KEY)
    assert shared.stats["degraded_acquires"] >= 1
    assert shared.outages == 1
    assert "unreachable" in caplog.text
    assert "127.0.0.1" in caplog.text
    redis_server.start()
    calls = shared.stats["redis_calls"]
    await shared.acquire(KEY)  # retry_s=0: Redis is tried again at once
    assert shared.stats["redis_calls"] == calls + 1
    assert not shared.degraded
    await shared.aclose()


async def test_fail_closed_refuses_while_redis_is_down(redis_server: RedisServer) -> None:
    closed = limiter(redis_server.url, rpm=600, tpm=None, fail_closed=True, timeout_s=0.3)
    await closed.acquire(KEY)
    redis_server.stop()
    with pytest.raises(RateLimiterUnavailable, match="fail_closed"):
        await closed.acquire(KEY)
    with pytest.raises(RateLimiterUnavailable):
        closed.try_acquire(KEY)
    redis_server.start()
    await closed.acquire(KEY)
    await closed.aclose()


def test_the_redis_password_never_shows(redis_server: RedisServer) -> None:
    secret = RedisRateLimiter(url="redis://user:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in repr(secret)
    assert "***" in repr(secret)


async def test_an_opening_in_one_process_is_seen_by_another(redis_server: RedisServer) -> None:
    state_a = SharedBreakerState(redis_server.url, sync_s=0.0)
    state_b = SharedBreakerState(redis_server.url, sync_s=0.0)
    a = CircuitBreaker("sim/gpt-4o-mini", consecutive_failures=2, minimum_calls=50, wait_s=30)
    b = CircuitBreaker("sim/gpt-4o-mini", consecutive_failures=2, minimum_calls=50, wait_s=30)
    state_a.attach(a)
    state_b.attach(b)
    await state_b.refresh(b)
    assert b.state == State.CLOSED  # nothing published yet
    for _ in range(2):
        a.acquire().record(Outcome.FAILURE)
    assert a.state == State.OPEN
    await state_a.flush()
    assert state_a.stats["published"] == 1
    await state_b.refresh(b)
    assert b.state == State.OPEN
    with pytest.raises(CircuitOpenError) as caught:
        b.acquire()
    assert caught.value.retry_in is not None
    assert 25 < caught.value.retry_in <= 30  # the remaining open time, not a fresh wait
    assert state_b.stats["published"] == 0  # an applied opening is not echoed back
    await state_a.aclose()
    await state_b.aclose()


@pytest.mark.timeout(180)
def test_four_processes_stay_under_one_quota_together(redis_server: RedisServer) -> None:
    """Acceptance: 4 worker processes, one Redis-backed limiter, a simulator enforcing 1200 RPM
    (over 1 s windows): no 429s to speak of, and most of the quota used; the same with local
    limiters overshoots (each process thinks the whole quota is its own). The throughput figure
    itself is measured by benchmarks/bench_shared_limiter.py."""
    from benchmarks import _quota_run
    from rat_langchain.sim import SimulatorProcess

    with SimulatorProcess(rpm=1200, limit_window_s=1.0) as sim:
        shared = _quota_run.run(sim, backend="redis", redis_url=redis_server.url, seconds=2.0)
        local = _quota_run.run(sim, backend="local", seconds=2.0)
    assert shared.throttled_share <= 0.01, shared
    assert shared.share_of_limit >= 0.6, shared  # loose here: 2 cores, 4 processes, 2 s
    assert local.throttled_share > 0.2, local


@pytest.mark.timeout(120)
def test_four_processes_ride_out_a_redis_outage(redis_server: RedisServer) -> None:
    """Acceptance: Redis stopped mid-run and started again: the 4 workers keep going on local
    buckets (each with a quarter of the limit), no call fails or hangs, and every worker is back
    on Redis at the end."""
    from benchmarks import _quota_run
    from rat_langchain.sim import SimulatorProcess

    with SimulatorProcess(rpm=1200, limit_window_s=1.0) as sim:
        run = _quota_run.run(
            sim,
            backend="redis",
            redis_url=redis_server.url,
            seconds=3.0,
            events=[(0.8, redis_server.stop), (1.8, redis_server.start)],
            retries=True,  # as configured by default: a caller sees what survives retries
        )
    assert run.failed == 0, run  # degraded, not failing
    assert run.ok > 0
    assert run.wall_s < 3.0 + 5.0, run  # no call hung on the dead Redis (timeouts are 1 s)
    # every worker saw the outage once: after the restart its dead pooled connections are
    # replaced on the spot, not taken for new outages
    assert run.outages == (1, 1, 1, 1), run
    assert not any(run.degraded_at_end), run  # ... and is back on the shared buckets


async def test_a_pool_configured_for_redis_shares_its_limiter_and_breakers(
    redis_server: RedisServer, sim: object
) -> None:
    from rat_langchain import ClientPool, RatConfig
    from tests.conftest import API_KEY

    config = RatConfig.from_dict(
        {
            "performance": {
                "rate_limiting": {"backend": "redis", "redis_url": redis_server.url},
                "circuit_breaker": {"share_open_state": True},
            }
        },
        env={},
    )
    async with ClientPool(config) as pool:
        assert isinstance(pool.limiter, RedisRateLimiter)
        llm = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)  # type: ignore[attr-defined]
        assert await llm.ainvoke("hi")
        assert pool.limiter.stats["redis_calls"] >= 1
        guard = llm.guard
        assert guard is not None
        assert isinstance(guard.breaker.shared, SharedBreakerState)  # type: ignore[union-attr]


async def test_while_redis_is_down_each_worker_takes_its_share(redis_server: RedisServer) -> None:
    # three workers (one prefix of their own, so no other test's heartbeats count), limits of
    # 600 RPM and 6000 TPM: a 10 s burst is 100 requests and 1000 tokens. The local buckets run
    # on a fake clock, so refilling them takes no time.
    now = [0.0]
    settings = {"rpm": 600, "tpm": 6000, "prefix": "share-test", "heartbeat_s": 0.0}
    a = limiter(redis_server.url, retry_s=60.0, timeout_s=0.3, clock=lambda: now[0], **settings)
    b, c = (limiter(redis_server.url, **settings) for _ in "bc")
    for worker in (b, c, a):
        await worker.acquire(KEY)  # each take also beats: alive
    assert a.workers == 3
    assert a.degraded_share == 1
    redis_server.stop()
    assert a.try_acquire(KEY) is None  # Redis is gone: local buckets, a third, starting empty
    assert a.degraded
    assert a.degraded_share == 3
    now[0] += 10.0  # a full 10 s burst's worth of refill
    granted = sum(a.try_acquire(KEY) is not None for _ in range(100))
    assert granted == 33  # a third of the 100-request burst, not all of it
    big = a.try_acquire(("x", "gpt-4o-mini"), tokens=3000)
    assert big is not None  # over a third of the TPM, within the whole: lent, not refused
    redis_server.start()
    a._link.down_until = 0.0  # try Redis again now rather than after retry_s
    await a.acquire(("y", "gpt-4o-mini"))
    assert not a.degraded
    assert a.degraded_share == 1
    for worker in (a, b, c):
        await worker.aclose()


async def test_something_that_is_not_redis_counts_as_redis_down(sim: object) -> None:
    """An HTTP server (the simulator) at redis_url: degraded with a warning, never a raw
    protocol error to the caller."""
    url = str(sim.base_url).replace("http://", "redis://").removesuffix("/v1")  # type: ignore[attr-defined]
    shared = limiter(url, rpm=600, tpm=None, timeout_s=0.5)
    reservation = await shared.acquire(KEY)
    assert reservation is not None
    assert shared.degraded
    assert shared.outages == 1
    await shared.aclose()


async def test_fail_closed_refusals_never_open_the_endpoints_breaker(
    redis_server: RedisServer, sim: object
) -> None:
    from rat_langchain import ClientPool, RatConfig
    from tests.conftest import API_KEY

    redis_server.stop()
    config = RatConfig.from_dict(
        {
            "performance": {
                "rate_limiting": {
                    "backend": "redis",
                    "redis_url": redis_server.url,
                    "redis_failure": "fail_closed",
                },
                "circuit_breaker": {"consecutive_failures": 3, "minimum_calls": 3},
            }
        },
        env={},
    )
    async with ClientPool(config) as pool:
        llm = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)  # type: ignore[attr-defined]
        for _ in range(10):
            with pytest.raises(RateLimiterUnavailable):
                await llm.ainvoke("hi")
        guard = llm.guard
        assert guard is not None
        assert guard.breaker is not None
        assert guard.breaker.state == State.CLOSED  # Redis's outage is not the endpoint's fault
        redis_server.start()
        assert await llm.ainvoke("hi")  # and the endpoint answers as soon as Redis is back


async def test_a_learned_token_limit_borrows_in_redis_as_locally(redis_server: RedisServer) -> None:
    """tpm "auto" starts at 200k: a larger request waits for a full bucket and borrows, as the
    local limiter does, instead of being refused before the server has said its limit; a
    number the user set still refuses it."""
    from rat_langchain import RequestTooLarge

    learned = limiter(redis_server.url, rpm=None, tpm="auto", prefix="borrow-test")
    assert await learned.acquire(("b", "m"), 250_000) is not None
    fixed = limiter(redis_server.url, rpm=None, tpm=200_000, prefix="borrow-test")
    with pytest.raises(RequestTooLarge, match="can never fit"):
        await fixed.acquire(("c", "m"), 250_000)
    await learned.aclose()
    await fixed.aclose()


def _at_once(limiter: RedisRateLimiter, key: tuple[str, str]) -> int:
    """How many requests the shared bucket grants right now (refill is negligible meanwhile)."""
    granted = 0
    while limiter.try_acquire(key) is not None and granted < 1000:
        granted += 1
    return granted


async def test_a_learned_limit_is_shared_and_one_process_429_slows_all(
    redis_server: RedisServer,
) -> None:
    """rpm "auto" with a 1 s burst: what one process learns (an announced limit; a 429 from a
    server that says nothing) is what the other's takes are held to."""
    a = limiter(redis_server.url, rpm="auto", tpm=None, burst_s=1.0, prefix="learn-test")
    b = limiter(redis_server.url, rpm="auto", tpm=None, burst_s=1.0, prefix="learn-test")
    announced_key, silent_key = ("http://announce/v1", "m"), ("http://silent/v1", "m")
    a.observe(announced_key, {"x-ratelimit-limit-requests": "1200"})
    await a.flush()
    assert _at_once(b, announced_key) == 20  # 1200/min, 1 s: b never saw a header

    assert _at_once(b, ("http://other/v1", "m")) == 8  # the starting 500/min: 8 in 1 s
    a.observe_429(silent_key, {})  # no headers, no retry-after: a slows down, and says so
    await a.flush()
    rate = a.learning.rates(silent_key)[0]
    assert rate is not None
    assert rate[0] < 500
    # the 429's pause is shared too; lift it to see the rate (the script's key layout)
    await redis.asyncio.Redis.from_url(redis_server.url).delete(
        f"learn-test:rl:{Key.of(silent_key).id}:pause"
    )
    assert _at_once(b, silent_key) == int(rate[0] / 60)  # b's own view is still 500/min
    await a.aclose()
    await b.aclose()


async def test_a_burst_widened_into_the_servers_room_is_there_for_every_process(
    redis_server: RedisServer,
) -> None:
    """An announced per-minute limit whose `remaining` shows room after a spent burst: the
    burst doubles (as locally) and the shared level rises to that room at once, so another
    process can take the wider burst now, not one refill at a time."""
    a = limiter(redis_server.url, rpm="auto", tpm=None, burst_s=1.0, prefix="room-test")
    b = limiter(redis_server.url, rpm="auto", tpm=None, burst_s=1.0, prefix="room-test")
    key = ("http://per-minute/v1", "m")
    announced = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "600"}
    a.observe(key, announced)
    await a.flush()
    assert _at_once(a, key) == 10  # 600/min, a 1 s burst; the next take must wait
    await a.acquire(key)  # granted after waiting: the shared burst was spent
    a.observe(key, {**announced, "x-ratelimit-remaining-requests": "580"})
    await a.flush()
    assert a.learning.rates(key)[0] == (600.0, 2.0)
    assert _at_once(b, key) >= 19  # the doubled burst, filled to the server's room


async def test_a_process_that_missed_a_429_cannot_undo_it(redis_server: RedisServer) -> None:
    """learn.lua: a drop only lowers and moves the epoch on; a rate set by a process that has
    not seen the latest epoch is refused, and the answer tells it what stands."""
    from rat_langchain.guards.redis._link import lua

    client = redis.asyncio.Redis.from_url(redis_server.url)
    script = lua("learn")
    key = "epoch-test:learned"
    first = await client.eval(script, 1, key, "set", 0, 60_000, "1200", "1", "0", "1")
    assert [v.decode() for v in first] == ["0", "1200", "1", "0", "1"]
    dropped = await client.eval(script, 1, key, "drop", 0, 60_000, "840", "1", "0", "1")
    assert [v.decode() for v in dropped][:2] == ["1", "840"]
    higher_drop = await client.eval(script, 1, key, "drop", 1, 60_000, "2000", "1", "0", "1")
    assert higher_drop[1].decode() == "840"  # a drop never raises
    stale = await client.eval(script, 1, key, "set", 0, 60_000, "1500", "1", "0", "1")
    assert [v.decode() for v in stale][:2] == ["2", "840"]  # refused: it had not seen the drops
    fresh = await client.eval(script, 1, key, "set", 2, 60_000, "1500", "1", "0", "1")
    assert [v.decode() for v in fresh][:2] == ["2", "1500"]  # grown back by one that had
    await client.aclose()


async def test_garbage_in_the_learned_rates_is_ignored(redis_server: RedisServer) -> None:
    """Redis is shared: what sits in the learned-rates hash is read as untrusted. Values no
    limiter wrote leave each process's own view standing, in the script and in the process."""
    a = limiter(redis_server.url, rpm="auto", tpm=None, burst_s=1.0, prefix="garbage-test")
    key = ("http://garbage/v1", "m")
    client = redis.asyncio.Redis.from_url(redis_server.url)
    learned = f"garbage-test:rl:{Key.of(key)}:learned"
    await client.hset(
        learned, mapping={"rpm": "nan", "rburst": "1e9", "tpm": "x", "tburst": "-1", "epoch": "z"}
    )
    assert _at_once(a, key) == 8  # the starting 500/min: the garbage was not used
    a.observe(key, {"x-ratelimit-limit-requests": "1200"})  # a set: answered with the garbage
    await a.flush()
    rate = a.learning.rates(key)[0]
    assert rate is not None
    assert rate[0] == 1200  # its own learned rate stands
    a.observe_429(key, {"retry-after": "1"})  # a drop: the script still runs
    await a.flush()
    assert not a.degraded  # a garbage epoch is not "Redis is down"
    await client.aclose()
    await a.aclose()
