"""Fuzz of what Redis holds for a key (issue 21): 10,000 random and adversarial states of its
buckets, pause and learned rates, each read by ``take.lua`` for a process configured with
rpm 600. Every read answers (no error, so no "Redis is down"), waits within what the reader's
own configuration allows, and costs Redis under 10 ms: Redis's own slow log, which times each
script on the server, must stay empty (a wall-clock bound here would time the test machine)."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import AsyncIterator

import redis.asyncio

from rat_langchain.guards.key import Key
from rat_langchain.guards.redis import RedisRateLimiter
from tests.conftest import RedisServer

STATES = 10_000
SLOW_US = 10_000  # 10 ms


def _value(rng: random.Random) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        return rng.choice(["nan", "-nan", "inf", "-inf", "1e309", "-1e309", "", " ", "0x10"])
    if kind == 1:
        return "9" * rng.choice([20, 400, 8000])  # huge digit strings
    if kind == 2:
        return "".join(rng.choice("0123456789.eE+-xyz\x00 ") for _ in range(rng.randrange(1, 40)))
    if kind == 3:
        return str(rng.randint(-(10**12), 10**12))
    if kind == 4:
        return repr(rng.uniform(-1, 1) * 10 ** rng.randint(-30, 300))
    if kind == 5:
        return str(rng.uniform(0, 100_000))  # plausible rates and levels
    if kind == 6:
        return repr(-rng.random() * 10 ** rng.randint(0, 30))
    if kind == 7:
        return "0"
    return str(rng.uniform(0, 2e12))  # times in ms, now-ish or far


@contextlib.asynccontextmanager
async def _no_slow_script(url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client, with Redis's slow log armed at ``SLOW_US``: leaving, no script may be in it
    (the fuzzer's own writes are not under test: a SET of 8000 digits once took 17 ms on a
    loaded machine)."""
    client = redis.asyncio.Redis.from_url(url)
    await client.config_set("slowlog-log-slower-than", SLOW_US)
    await client.slowlog_reset()
    try:
        yield client
        slow = [
            entry
            for entry in await client.slowlog_get(128)
            if entry["command"].split(b" ", 1)[0].upper() in (b"EVAL", b"EVALSHA", b"FCALL")
        ]
        assert slow == [], [(entry["duration"], entry["command"][:60]) for entry in slow]
    finally:
        await client.config_set("slowlog-log-slower-than", 10_000)
        await client.aclose()


async def _write(client: redis.asyncio.Redis, names: list[str], rng: random.Random) -> None:
    rpm, tpm, pause, learned = names
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.delete(name)
    for name, fields in ((rpm, ("level", "ts")), (tpm, ("level", "ts"))):
        shape = rng.randrange(4)
        if shape == 0:
            pipe.hset(name, mapping={f: _value(rng) for f in fields})
        elif shape == 1:
            pipe.set(name, _value(rng) or "x")  # the wrong type
        elif shape == 2:
            pipe.rpush(name, "a", "b")  # another wrong type
    shape = rng.randrange(3)
    if shape == 0:
        pipe.set(pause, _value(rng) or "x")
    elif shape == 1:
        pipe.hset(pause, mapping={"a": "b"})
    if rng.randrange(2):
        fields = ("rpm", "rburst", "tpm", "tburst", "epoch")
        pipe.hset(
            learned, mapping={f: _value(rng) for f in fields if rng.randrange(3)} or {"x": "1"}
        )
    await pipe.execute()


async def test_ten_thousand_hostile_redis_states_are_read_within_bounds(
    redis_server: RedisServer,
) -> None:
    waits = []
    async with _no_slow_script(redis_server.url) as client:
        limiter = RedisRateLimiter(
            url=redis_server.url,
            prefix="fuzz",
            rpm=600,
            tpm=None,
            safety_margin=1.0,
            burst_s=1.0,
            timeout_s=2.0,
            max_pause_s=2.0,
        )
        rng = random.Random(21)
        try:
            for i in range(STATES):
                key = Key("http://fuzz/v1", f"m{i % 500}")  # the key table stays small
                await _write(client, limiter._keys(key), rng)
                wait_ms = await limiter._take(key, rng.choice([0, 1, 100, 10**6]))
                assert math.isfinite(wait_ms), i
                assert 0 <= wait_ms <= 61_000, (i, wait_ms)  # a minute of debt and one request
                waits.append(wait_ms)
            assert not limiter.degraded  # garbage is never "Redis is down"
        finally:
            await limiter.aclose()
    assert sum(w == 0 for w in waits) > STATES // 10  # not every state stalls the key


async def _write_learned(client: redis.asyncio.Redis, name: str, rng: random.Random) -> None:
    await client.delete(name)
    shape = rng.randrange(5)
    if shape == 0:
        await client.set(name, _value(rng) or "x")  # the wrong type
    elif shape == 1:
        await client.rpush(name, "a")
    elif shape < 4:
        fields = ("rpm", "rburst", "tpm", "tburst", "epoch")
        mapping = {f: _value(rng) for f in fields if rng.randrange(4)} or {"x": "1"}
        await client.hset(name, mapping=mapping)


async def test_ten_thousand_hostile_learned_rates_are_adopted_within_bounds(
    redis_server: RedisServer,
) -> None:
    """learn.lua and the reader of its answer, over hostile hashes of learned rates: a key of
    another type made the script fail and an epoch of 8000 digits made ``int`` fail, both
    taken as "Redis is down"; now each is ignored or replaced, and what is adopted is a rate
    a limiter could have written."""
    async with _no_slow_script(redis_server.url) as client:
        limiter = RedisRateLimiter(
            url=redis_server.url, prefix="fuzz-learn", rpm="auto", tpm="auto", timeout_s=2.0
        )
        rng = random.Random(2021)
        try:
            for i in range(STATES):
                key = Key("http://fuzz/v1", f"m{i % 500}")
                await _write_learned(client, limiter._keys(key)[3], rng)
                view = limiter._views.obtain(key)
                view.agreed = (rng.choice([0, 1, 7, 10**14]), limiter.learning.rates(key))
                await limiter._learn(key, view, drop=rng.random() < 0.3)
                for rate in limiter.per_minute(key):
                    assert rate is None or (math.isfinite(rate) and 1 <= rate < 1e12), (i, rate)
                assert 0 <= view.agreed[0] < 10**15
            assert not limiter.degraded
            assert limiter.stats["redis_errors"] == 0
        finally:
            await limiter.aclose()
