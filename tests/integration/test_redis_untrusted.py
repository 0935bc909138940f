"""What Redis holds is shared, so it is untrusted: each reader bounds it by its own configuration
(issue 21, items 1, 4, 7 and 8). Two limiter objects stand for two processes; a third party
writes the hashes directly, as a peer with other settings (or anyone with access) could."""

from __future__ import annotations

import time

import redis.asyncio

from rat_langchain.guards.key import Key
from rat_langchain.guards.redis import RedisRateLimiter
from tests.conftest import RedisServer

KEY = ("http://untrusted/v1", "m")


def _limiter(url: str, prefix: str, **kwargs: object) -> RedisRateLimiter:
    settings: dict[str, object] = {"safety_margin": 1.0, "burst_s": 1.0, "timeout_s": 0.5}
    settings.update(kwargs)
    return RedisRateLimiter(url=url, prefix=prefix, **settings)  # type: ignore[arg-type]


def _at_once(limiter: RedisRateLimiter) -> int:
    granted = 0
    while limiter.try_acquire(KEY) is not None and granted < 1000:
        granted += 1
    return granted


async def test_a_limit_below_sixty_a_minute_is_granted(redis_server: RedisServer) -> None:
    """Item 1: 54 RPM with a one-second burst is a bucket of 0.9 requests; the script waited
    for a whole one that could never fit, so every call hung (the local limiter got it right:
    wait for a full bucket, take the request into debt)."""
    a = _limiter(redis_server.url, "below-sixty", rpm=54, tpm=None)
    assert a.try_acquire(KEY) is not None
    assert a.try_acquire(KEY) is None  # in debt now: the next waits about a second
    wait_ms = await a._take(Key.of(KEY), 0)
    assert 0 < wait_ms <= 60_000 / 54 * 1.5
    await a.aclose()


async def test_a_rate_in_redis_never_lifts_a_configured_ceiling(redis_server: RedisServer) -> None:
    """Item 4: a peer left on auto that learned 10^6 RPM, or a 0 ("not limited") in the
    learned hash, let a process configured with rpm_limit 600 send thousands at once."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    for prefix, rpm in (("lifts-high", "1000000"), ("lifts-zero", "0")):
        learned = f"{prefix}:rl:{Key.of(KEY).id}:learned"
        await client.hset(learned, mapping={"rpm": rpm, "rburst": "60", "epoch": "0"})
        a = _limiter(redis_server.url, prefix, rpm=600, tpm=None)
        assert _at_once(a) == 10  # one second of the configured 600, whatever Redis says
        await a.aclose()
    await client.aclose()


async def test_a_pause_or_a_rate_in_redis_is_bounded_by_the_reader(
    redis_server: RedisServer,
) -> None:
    """Items 7 and 8: a pause of 10^30 ms, a bucket level of -10^30, a time in the future or
    a peer's 0.001 RPM stalled every process, configured limits included; each is bounded by
    the reader's max_server_wait_s, its floors and at most a minute of debt."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    key = Key.of(KEY)
    base = key.id
    cap_ms = 2_000.0
    cases = {
        "pause": {f"pause:rl:{base}:pause": "1e30"},
        "level": {f"level:rl:{base}:rpm": {"level": "-1e30", "ts": str(time.time() * 1000)}},
        "future": {f"future:rl:{base}:rpm": {"level": "0", "ts": "1e30"}},
        "nan": {f"nan:rl:{base}:rpm": {"level": "nan", "ts": "nan"}},
        "slow": {f"slow:rl:{base}:learned": {"rpm": "0.001", "rburst": "1", "epoch": "0"}},
    }
    for prefix, writes in cases.items():
        for name, value in writes.items():
            if isinstance(value, dict):
                await client.hset(name, mapping=value)
            else:
                await client.set(name, value)
        a = _limiter(redis_server.url, prefix, rpm=600, tpm=None, max_pause_s=cap_ms / 1000)
        wait_ms = await a._take(key, 0)
        a.try_acquire(KEY)  # whatever it answers, it answers (no error: garbage is ignored)
        assert wait_ms <= 61_000, prefix  # a minute of debt and one request at most
        if prefix in ("pause", "slow"):
            assert wait_ms <= cap_ms, prefix
        assert not a.degraded, prefix  # garbage is not "Redis is down"
        await a.aclose()
    await client.aclose()


async def test_a_pause_past_the_readers_longest_ends_when_the_readers_would(
    redis_server: RedisServer,
) -> None:
    """Issue 32 (hostile: a Redis-held pause): each wait for a pause of 10^30 ms was bounded
    by the reader's max_server_wait_s, but the pause itself stayed, so every call waited that
    long again, forever. It is cut back, with an expiry, to the reader's longest; and a pause
    key holding no number (or of another type) no longer fails pause.lua, which read as
    "Redis is down"."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    key = Key.of(KEY)
    cap_ms = 2_000.0
    pause_key = f"endless:rl:{key.id}:pause"
    await client.set(pause_key, "1e30")  # no expiry: it would outlive every process
    a = _limiter(redis_server.url, "endless", rpm=600, tpm=None, max_pause_s=cap_ms / 1000)
    before_ms = time.time() * 1000
    assert 0 < await a._take(key, 0) <= cap_ms
    assert 0 < await client.pttl(pause_key) <= cap_ms + 1
    assert float(await client.get(pause_key)) <= time.time() * 1000 + cap_ms
    assert float(await client.get(pause_key)) >= before_ms  # still held: cut back, not lifted
    for held in ("not a number", "nan"):
        await client.set(pause_key, held)
        a.pause(KEY, 0.5)
        await a.flush()
        assert a.stats["redis_errors"] == 0, held
        assert float(await client.get(pause_key)) > time.time() * 1000, held  # now held
    await client.delete(pause_key)
    await client.hset(pause_key, mapping={"a": "hash"})
    a.pause(KEY, 0.5)
    await a.flush()
    assert a.stats["redis_errors"] == 0
    assert float(await client.get(pause_key)) > time.time() * 1000
    await a.aclose()
    await client.aclose()


async def test_fake_workers_from_the_future_are_forgotten(redis_server: RedisServer) -> None:
    """Item 19: members of the workers' set with far-future scores never expired, so during
    an outage each process's share of the limit became 1/100001."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    await client.zadd("workers-test:workers", {f"fake{i}": 1e18 for i in range(100)})
    a = _limiter(redis_server.url, "workers-test", rpm=600, tpm=None)
    await a._heartbeat()
    assert a.workers == 1
    await client.aclose()
    await a.aclose()


async def test_a_key_of_the_wrong_type_is_not_redis_down(redis_server: RedisServer) -> None:
    """Item 18: a bucket or pause key of the wrong type made take.lua fail, which reads as
    "Redis is down": with fail_closed every call of that model failed while the value stayed."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    base = Key.of(KEY).id
    await client.set(f"wrongtype:rl:{base}:rpm", "a string where a hash belongs")
    await client.hset(f"wrongtype:rl:{base}:pause", mapping={"a": "hash"})
    await client.set(f"wrongtype:rl:{base}:learned", "not a hash")
    a = _limiter(redis_server.url, "wrongtype", rpm=600, tpm=None, fail_closed=True)
    assert a.try_acquire(KEY) is not None  # no RateLimiterUnavailable
    assert not a.degraded
    await client.aclose()
    await a.aclose()


async def test_keys_that_print_alike_share_nothing_in_redis(redis_server: RedisServer) -> None:
    """Item 3: the flat ``{endpoint}/{model}`` made endpoint ``…/v1/x`` + model ``y`` and
    endpoint ``…/v1`` + model ``x/y`` one bucket; tenants of one endpoint share none either."""
    a = _limiter(redis_server.url, "collide", rpm=600, tpm=None)
    keys = [Key("http://h/v1/x", "y"), Key("http://h/v1", "x/y"), Key("http://h/v1", "x/y", "t")]
    names = [set(a._keys(key)) for key in keys]
    assert not (names[0] & names[1])
    assert not (names[1] & names[2])
    assert not (names[0] & names[2])
    await a.aclose()


async def test_per_key_views_are_bounded_as_the_local_states(
    redis_server: RedisServer, caplog: object
) -> None:
    """Item 11 for the shared limiter: its per-key views (rates agreed with Redis, queued
    takes, locks) were plain dicts that kept every model name for ever."""
    a = _limiter(redis_server.url, "bounded", rpm=6000, tpm=None, max_keys=20)
    for i in range(300):
        key = ("http://untrusted/v1", f"model-{i}")
        reservation = await a.acquire(key)
        reservation.reconcile(0)
        a.acknowledge(key)
    assert len(a._views) <= 20
    assert a.try_acquire(KEY) is not None  # the newest keys work as before
    await a.aclose()
