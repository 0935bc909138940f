"""Per-key state is bounded (issue 21, item 11): idle keys expire, the number kept has a cap,
and nothing in use (a queue, a call in flight, an open breaker) is ever forgotten."""

from __future__ import annotations

import asyncio
import logging

import pytest

from rat_langchain.config import CircuitBreakerConfig, RatConfig
from rat_langchain.guards import build_guards
from rat_langchain.guards.breaker import BreakerRegistry, Outcome, State
from rat_langchain.guards.key import Key
from rat_langchain.guards.limiter import RateLimiter
from tests.support.clock import FakeClock, settle

URL = "http://sim/v1"


def _limiter(clock: FakeClock, **kwargs: object) -> RateLimiter:
    args: dict[str, object] = {"rpm": 60, "tpm": None, "safety_margin": 1.0, "first_hold_s": 0.0}
    return RateLimiter(clock=clock, call_later=clock.call_later, **{**args, **kwargs})  # type: ignore[arg-type]


async def test_3000_model_names_keep_at_most_max_keys_states(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    limiter = _limiter(clock, max_keys=50)
    with caplog.at_level(logging.WARNING, logger="rat_langchain.guards"):
        for n in range(3000):
            clock.now += 0.001
            (await limiter.acquire(Key(URL, f"model-{n}"))).reconcile(0)
    assert len(limiter.limits()) <= 50
    assert len([r for r in caplog.records if "max_keys" in r.getMessage()]) == 1


async def test_a_key_in_use_is_never_forgotten() -> None:
    """A key with callers queued keeps its state (and its queue) however many keys come."""
    clock = FakeClock()
    limiter = _limiter(clock, rpm=60, burst_s=1.0, max_keys=10)  # one request a second
    busy = Key(URL, "busy")
    await limiter.acquire(busy)
    waiter = asyncio.create_task(limiter.acquire(busy))
    await settle()
    for n in range(200):
        await limiter.acquire(Key(URL, f"other-{n}"))
    assert busy in limiter.limits()
    await clock.advance(1.0)
    await asyncio.wait_for(waiter, 1)  # the queued caller is served from the same state


async def test_an_idle_key_expires_after_idle_s() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, idle_s=60.0)
    await limiter.acquire(Key(URL, "old"))
    clock.now += 59.0
    await limiter.acquire(Key(URL, "recent"))
    assert Key(URL, "old") in limiter.limits()
    clock.now += 7.0  # forgotten within a tenth of idle_s (the sweep's period)
    await limiter.acquire(Key(URL, "new"))
    assert set(limiter.limits()) == {Key(URL, "recent"), Key(URL, "new")}


def test_breakers_are_capped_and_an_open_or_used_one_is_kept() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(
        CircuitBreakerConfig(consecutive_failures=1), max_keys=20, clock=clock
    )
    opened = registry.get(Key(URL, "opened"))
    opened.acquire().record(Outcome.FAILURE)
    assert opened.state == State.OPEN
    used = registry.get(Key(URL, "used"))  # held by a guard, used without registry.get
    for n in range(500):
        clock.now += 0.01
        used.acquire().record(Outcome.SUCCESS)
        registry.get(Key(URL, f"model-{n}"))
    kept = list(registry)
    assert len(kept) <= 20
    assert opened in kept  # an open breaker is never forgotten
    assert registry.get(Key(URL, "used")) is used  # the most recently used one is kept


def test_the_config_bounds_every_table() -> None:
    guards = build_guards(
        RatConfig.from_dict({"performance": {"keys": {"max_keys": 7, "idle_s": 5}}}, env={})
    )
    assert guards.metrics.max_series == 7
    assert guards.breakers is not None
    assert guards.breakers._breakers.max_keys == 7
    assert isinstance(guards.limiter, RateLimiter)
    assert guards.limiter.feedback._states.max_keys == 7
    assert guards.limiter.feedback._states.idle_s == 5
