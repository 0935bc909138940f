"""CircuitBreaker state logic on a fake clock."""

from __future__ import annotations

import asyncio
import json

import httpx2
import openai
import pytest

from rat_langchain.config import CircuitBreakerConfig
from rat_langchain.guards.breaker import (
    BreakerRegistry,
    CircuitBreaker,
    CircuitOpenError,
    Outcome,
    State,
    StateChange,
    classify,
)
from tests.support.clock import FakeClock
from tests.support.openai_errors import status_error


def breaker(clock: FakeClock, **kwargs: object) -> CircuitBreaker:
    defaults: dict[str, object] = {
        "window_size": 10,
        "minimum_calls": 4,
        "failure_rate_threshold": 0.5,
        "consecutive_failures": 100,
        "wait_s": 5.0,
        "max_wait_s": 20.0,
        "half_open_permits": 2,
    }
    return CircuitBreaker("test", clock=clock, **{**defaults, **kwargs})  # type: ignore[arg-type]


def run(b: CircuitBreaker, outcome: Outcome, duration: float = 0.01) -> None:
    b.acquire().record(outcome, duration)


def test_classification_counts_only_transient_failures() -> None:
    request = httpx2.Request("POST", "http://sim/v1")
    assert classify(None) == Outcome.SUCCESS
    assert classify(openai.APITimeoutError(request)) == Outcome.FAILURE
    assert classify(openai.APIConnectionError(request=request)) == Outcome.FAILURE
    assert classify(status_error(500)) == Outcome.FAILURE
    assert classify(status_error(503)) == Outcome.FAILURE
    assert classify(status_error(408)) == Outcome.FAILURE
    assert classify(json.JSONDecodeError("x", "doc", 0)) == Outcome.FAILURE
    for status in (400, 401, 403, 404, 422):
        assert classify(status_error(status)) == Outcome.IGNORED
    assert (
        classify(status_error(429, body={"error": {"code": "rate_limit_exceeded"}}))
        == Outcome.IGNORED
    )
    quota = status_error(
        429, body={"error": {"code": "insufficient_quota", "type": "insufficient_quota"}}
    )
    assert classify(quota) == Outcome.FORCE_OPEN
    assert classify(ValueError("bad input")) == Outcome.IGNORED
    assert classify(RuntimeError("boom")) == Outcome.FAILURE


def test_minimum_calls_before_the_rate_is_judged() -> None:
    clock = FakeClock(100.0)
    b = breaker(clock)
    for _ in range(3):
        run(b, Outcome.FAILURE)
    assert b.state == State.CLOSED  # 3 < minimum_calls
    run(b, Outcome.FAILURE)
    assert b.state == State.OPEN


def test_failure_rate_threshold_over_the_sliding_window() -> None:
    b = breaker(FakeClock(100.0))
    for outcome in [Outcome.SUCCESS] * 6 + [Outcome.FAILURE] * 4:
        run(b, outcome)
    assert b.state == State.CLOSED  # 4/10 = 40 %
    run(b, Outcome.FAILURE)  # window slides: the oldest success drops out, 5/10
    assert b.state == State.OPEN


def test_slow_calls_open_the_circuit() -> None:
    b = breaker(FakeClock(100.0), slow_call_duration_s=1.0, slow_call_rate_threshold=0.75)
    for _ in range(3):
        run(b, Outcome.SUCCESS, duration=2.0)
    run(b, Outcome.SUCCESS, duration=0.1)
    assert b.state == State.OPEN  # 3/4 slow


def test_consecutive_failures_open_before_the_minimum() -> None:
    b = breaker(FakeClock(100.0), consecutive_failures=2, minimum_calls=10)
    run(b, Outcome.FAILURE)
    run(b, Outcome.FAILURE)
    assert b.state == State.OPEN


def test_caller_errors_count_as_neither() -> None:
    b = breaker(FakeClock(100.0))
    for _ in range(20):
        run(b, Outcome.IGNORED)
    assert b.state == State.CLOSED
    assert b.snapshot()["window"] == 0


def test_open_fails_fast_with_time_of_next_attempt_then_half_open_probes_close_it() -> None:
    clock = FakeClock(100.0)
    b = breaker(clock)
    changes: list[StateChange] = []
    b.add_listener(changes.append)
    for _ in range(4):
        run(b, Outcome.FAILURE)
    with pytest.raises(CircuitOpenError) as info:
        b.acquire()
    assert info.value.retry_at == pytest.approx(105.0)
    assert info.value.retry_in == pytest.approx(5.0)
    clock.now += 5.0
    p1, p2 = b.acquire(), b.acquire()
    assert b.state == State.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        b.acquire()  # only two probe permits
    p1.record(Outcome.SUCCESS, 0.01)
    assert b.state == State.HALF_OPEN
    p2.record(Outcome.SUCCESS, 0.01)
    assert b.state == State.CLOSED
    assert [(c.old, c.new) for c in changes] == [
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.CLOSED),
    ]
    assert b.transitions[(State.CLOSED, State.OPEN)] == 1
    assert b.calls["rejected"] == 2


def test_failed_probes_reopen_with_a_growing_capped_wait() -> None:
    clock = FakeClock(100.0)
    b = breaker(clock, half_open_permits=1)
    for _ in range(4):
        run(b, Outcome.FAILURE)
    waits = []
    for _ in range(4):
        with pytest.raises(CircuitOpenError) as info:
            b.acquire()
        waits.append(info.value.retry_in)
        assert info.value.retry_in is not None
        clock.now += info.value.retry_in
        run(b, Outcome.FAILURE)  # the probe fails
    assert waits == [5.0, 10.0, 20.0, 20.0]
    clock.now += 20.0
    run(b, Outcome.SUCCESS)
    assert b.state == State.CLOSED
    for _ in range(4):
        run(b, Outcome.FAILURE)
    with pytest.raises(CircuitOpenError) as info:
        b.acquire()
    assert info.value.retry_in == 5.0  # closing reset the growth


async def test_cancelled_probe_gives_its_permit_back() -> None:
    clock = FakeClock(100.0)
    b = breaker(clock, half_open_permits=1)
    for _ in range(4):
        run(b, Outcome.FAILURE)
    clock.now += 5.0
    started = asyncio.Event()

    async def probe() -> None:
        async with b.permit():
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(probe())
    await started.wait()
    with pytest.raises(CircuitOpenError):
        b.acquire()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    b.acquire().record(Outcome.SUCCESS, 0.0)  # the permit came back
    assert b.state == State.CLOSED


async def test_guard_classifies_exceptions() -> None:
    b = breaker(FakeClock(100.0), consecutive_failures=2)
    with pytest.raises(openai.BadRequestError):
        async with b.permit():
            raise status_error(400)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            async with b.permit():
                raise status_error(500)
    assert b.state == State.OPEN
    with pytest.raises(CircuitOpenError):
        async with b.permit():
            pytest.fail("must not run while open")


def test_insufficient_quota_forces_open() -> None:
    b = breaker(FakeClock(100.0))
    run(b, Outcome.FORCE_OPEN)
    assert b.state == State.OPEN


def test_operator_states() -> None:
    clock = FakeClock(100.0)
    b = breaker(clock)
    b.force_open()
    clock.now += 1000
    with pytest.raises(CircuitOpenError) as info:
        b.acquire()
    assert info.value.retry_at is None
    assert "operator" in str(info.value)
    b.disable()
    for _ in range(50):
        run(b, Outcome.FAILURE)
    assert b.state == State.DISABLED
    b.reset()
    assert b.state == State.CLOSED


def test_stale_results_after_a_transition_are_ignored() -> None:
    b = breaker(FakeClock(100.0))
    slow_call = b.acquire()
    for _ in range(4):
        run(b, Outcome.FAILURE)
    assert b.state == State.OPEN
    b.reset()
    slow_call.record(Outcome.FAILURE, 0.01)  # admitted before the reset
    assert b.snapshot()["window"] == 0


def test_registry_shares_one_breaker_per_key_from_config() -> None:
    registry = BreakerRegistry(CircuitBreakerConfig(wait_s=2.0, max_wait_s=4.0))
    a = registry.get(("http://sim/v1", "gpt-4o-mini"))
    assert a is registry.get(("http://sim/v1", "gpt-4o-mini"))
    assert a is not registry.get(("http://sim/v1", "gpt-4o"))
    assert a.wait_s == 2.0
    assert a.name == "http://sim/v1/gpt-4o-mini"
    assert len(list(registry)) == 2


def test_bad_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_wait_s"):
        CircuitBreaker(wait_s=10, max_wait_s=5)


@pytest.mark.parametrize("seconds", [864_000.0, 1e30, float("inf"), float("nan"), -5.0])
def test_an_opening_read_from_a_peer_lasts_at_most_this_breakers_max_wait(seconds: float) -> None:
    """A peer's (or a tampered) opening in Redis held this process's breaker for the key's
    whole TTL (up to 10 days): it now lasts at most this breaker's own ``max_wait_s``."""
    clock = FakeClock(100.0)
    b = breaker(clock)  # max_wait_s = 20
    b.open_remotely(seconds)
    assert 0.0 <= b.open_for_s <= 20.0
    clock.now += 20.0
    assert b.state != State.OPEN  # half-open (probing) once this breaker's own cap has passed
