"""The guard's sync and async drivers over one decision core: the same scenarios give the same
attempts, retries, errors and breaker states, and a sync caller honours what an async one does
(the learned concurrency limit, another process's open breaker)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from rat_langchain import CircuitBreaker, CircuitOpenError, RateLimiter, RetryPolicy
from rat_langchain.errors import ApiKeyError, DeadlineExceeded
from rat_langchain.guards.breaker import Outcome, State
from rat_langchain.guards.engine import Guard
from rat_langchain.guards.key import Key
from rat_langchain.guards.redis.breaker import SharedBreakerState
from tests.support.openai_errors import status_error
from tests.support.redis_server import RedisServer

KEY = Key("http://sim/v1", "gpt-4o-mini")
NO_WAIT = RetryPolicy(max_attempts=4, initial_backoff_s=0.001, max_backoff_s=0.002)


@dataclass
class Server:
    """What "the server" answers, attempt by attempt, and what it saw."""

    script: list[int | str]
    seen: list[int | str] = field(default_factory=list)

    def answer(self) -> str:
        status = self.script[len(self.seen)] if len(self.seen) < len(self.script) else "ok"
        self.seen.append(status)
        if status == "ok":
            return "ok"
        assert isinstance(status, int)
        raise status_error(status, {"retry-after-ms": "1"} if status == 429 else None)


SCENARIOS: dict[str, list[int | str]] = {
    "answers": ["ok"],
    "two 503s then an answer": [503, 503, "ok"],
    "a 429 then an answer": [429, "ok"],
    "the caller's mistake is not retried": [400],
    "a bad key is ApiKeyError": [401],
    "always failing: attempts run out": [500, 500, 500, 500, 500],
}


def _guard() -> Guard:
    return Guard(
        KEY,
        limiter=RateLimiter(rpm=6000, tpm=None),
        breaker=CircuitBreaker(str(KEY), consecutive_failures=50, minimum_calls=100),
        retry=NO_WAIT,
    )


def _outcome(run: Callable[[], Any]) -> str:
    try:
        return f"returned {run()}"
    except Exception as exc:
        return f"raised {type(exc).__name__}"


def _drive(driver: str, script: list[int | str]) -> tuple[Any, ...]:
    """One scenario through one driver: what the call did, what the server saw, the counts."""
    server, guard = Server(list(script)), _guard()
    if driver == "async":

        async def attempt() -> str:
            return server.answer()

        outcome = _outcome(lambda: asyncio.run(guard.run(attempt, tokens=10)))
    else:
        outcome = _outcome(lambda: guard.run_sync(server.answer, tokens=10))
    breaker, limiter = guard.breaker, guard.limiter
    assert breaker is not None
    assert limiter is not None
    snapshot = breaker.snapshot()
    calls = (snapshot["failures_in_window"], snapshot["calls"])
    return outcome, server.seen, guard.stats, calls, limiter.stats["acquired"]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_sync_and_async_drivers_decide_the_same(name: str) -> None:
    results = {driver: _drive(driver, SCENARIOS[name]) for driver in ("async", "sync")}
    assert results["sync"] == results["async"]
    if name == "a bad key is ApiKeyError":
        assert results["sync"][0] == f"raised {ApiKeyError.__name__}"


def test_a_sync_late_result_is_a_deadline_and_not_retried() -> None:
    guard = Guard(KEY, retry=NO_WAIT, timeout=0.0)
    seen: list[int] = []
    with pytest.raises(DeadlineExceeded):
        guard.run_sync(lambda: seen.append(1))
    assert seen == [1]


def test_sync_calls_honour_the_learned_concurrency_limit() -> None:
    """A silent server answered 429: the key's learned limit is one attempt in flight. A second
    sync call waits for the first (before, the sync path skipped the gate and overlapped)."""
    limiter = RateLimiter(rpm="auto", tpm=None)
    limiter.observe_429(KEY, {"retry-after-ms": "0"})  # silent server: concurrency limit 1
    assert limiter.limits()[KEY]["concurrency_limit"] == 1
    guard = Guard(KEY, limiter=limiter, retry=None)
    first_running, second_ran, first_done = threading.Event(), threading.Event(), threading.Event()
    overlapped: list[bool] = []

    def first() -> str:
        first_running.set()
        # without the gate the second call runs now and sets this; with it, it cannot
        second_ran.wait(timeout=0.5)
        first_done.set()
        return "first"

    def second() -> str:
        overlapped.append(not first_done.is_set())
        second_ran.set()
        return "second"

    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(guard.run_sync(first)))
    thread.start()
    assert first_running.wait(timeout=5)
    results.append(guard.run_sync(second))
    thread.join(timeout=5)
    assert sorted(results) == ["first", "second"]
    assert overlapped == [False]


async def test_sync_calls_see_another_processes_open_breaker(redis_server: RedisServer) -> None:
    """Process A's breaker opened; B's sync call fails fast without reaching the endpoint
    (before, only the async path refreshed the shared state)."""
    state_a = SharedBreakerState(redis_server.url, sync_s=0.0)
    state_b = SharedBreakerState(redis_server.url, sync_s=0.0)
    a = CircuitBreaker(str(KEY), consecutive_failures=2, minimum_calls=50, wait_s=30)
    b = CircuitBreaker(str(KEY), consecutive_failures=2, minimum_calls=50, wait_s=30)
    state_a.attach(a)
    state_b.attach(b)
    for _ in range(2):
        a.acquire().record(Outcome.FAILURE)
    await state_a.flush()
    guard = Guard(KEY, breaker=b, retry=NO_WAIT)
    sent: list[int] = []

    def attempt() -> openai.types.chat.ChatCompletion:
        sent.append(1)
        raise AssertionError("the endpoint must not be called")

    with pytest.raises(CircuitOpenError):
        await asyncio.to_thread(guard.run_sync, attempt)  # sync code, off this loop
    assert sent == []
    assert b.state == State.OPEN
    await state_a.aclose()
    await state_b.aclose()


async def test_time_queued_in_the_client_is_never_the_endpoints_failure() -> None:
    """A call waits 0.8 s of its 1 s deadline in the limiter, then its attempts hang: they had
    a sliver of the deadline, so they end the call as DeadlineExceeded and the breaker counts
    none of them (before, each squeezed timeout was a failure: a healthy server's breaker
    opened on this client's own queueing)."""
    limiter = RateLimiter(rpm=75, tpm=None, burst_s=1 / 1.25, first_hold_s=0.0, safety_margin=1.0)
    breaker = CircuitBreaker(str(KEY), consecutive_failures=1, minimum_calls=100)
    retry = RetryPolicy(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.001)
    guard = Guard(KEY, limiter=limiter, breaker=breaker, retry=retry, timeout=1.0)
    assert await guard.run(_answer) == "ok"  # takes the one request the bucket holds

    with pytest.raises(DeadlineExceeded):
        await guard.run(_hang)  # 0.8 s queued, then 0.1 s attempts that hang
    assert guard.stats.attempts == 3  # the second call did reach the endpoint, twice
    assert breaker.state == State.CLOSED
    assert breaker.snapshot()["failures_in_window"] == 0


async def test_an_attempt_with_a_fair_share_that_hangs_is_the_endpoints_failure() -> None:
    breaker = CircuitBreaker(str(KEY), consecutive_failures=1, minimum_calls=100)
    guard = Guard(KEY, breaker=breaker, retry=RetryPolicy(max_attempts=2), timeout=0.2)
    # first attempt: half the deadline, not queued: fair, so its timeout opens the breaker,
    # and the retry (if its backoff fits the deadline) is refused by it
    with pytest.raises((DeadlineExceeded, CircuitOpenError)):
        await guard.run(_hang)
    assert breaker.state == State.OPEN


async def _answer() -> str:
    return "ok"


async def _hang() -> str:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def test_a_sync_attempts_own_timeout_is_not_the_calls_deadline() -> None:
    """Only the deadline running out is DeadlineExceeded; an attempt's own TimeoutError (a
    socket's, a tool's) is raised as it is, as the async driver does."""

    def attempt() -> str:
        raise TimeoutError("the tool's own timeout")

    guard = Guard(KEY, retry=None, timeout=30.0)
    with pytest.raises(TimeoutError) as raised:
        guard.run_sync(attempt)
    assert not isinstance(raised.value, DeadlineExceeded)


@pytest.mark.parametrize("driver", ["async", "sync"])
def test_a_429_the_limiter_holds_is_retried_when_the_limiter_lets_it(driver: str) -> None:
    """A 429 the limiter saw without a retry-after pauses the key (here for the server's 1 ms
    reset); the retry waits no backoff of its own on top (30 s here): before, both applied,
    and the calls refused last on a per-second limit idled a second after the key was free.
    Without a limiter the backoff still applies."""
    slow = RetryPolicy(max_attempts=3, initial_backoff_s=30.0, max_backoff_s=60.0)
    for limiter in (RateLimiter(rpm=6000, tpm=None), None):
        script: list[int | str] = [429, "ok"]
        seen: list[int | str] = []
        sleeps: list[float] = []

        def answer(script: list[int | str] = script, seen: list[int | str] = seen) -> str:
            status = script[len(seen)]
            seen.append(status)
            if status == 429:
                raise status_error(429, {"x-ratelimit-reset-requests": "1ms"})
            return "ok"

        async def fake_sleep(seconds: float, sleeps: list[float] = sleeps) -> None:
            sleeps.append(seconds)

        guard = Guard(KEY, limiter=limiter, retry=slow, sleep=fake_sleep)
        if driver == "async":

            async def attempt(answer: Callable[[], str] = answer) -> str:
                return answer()

            assert asyncio.run(guard.run(attempt)) == "ok"
        else:
            slept: list[float] = []
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr("rat_langchain.guards.engine.time.sleep", slept.append)
                assert guard.run_sync(answer) == "ok"
            sleeps.extend(slept)
        assert seen == [429, "ok"]
        if limiter is not None:
            assert sleeps == [0.0]
            assert limiter.stats["paused"] == 1
        else:
            assert len(sleeps) == 1
            assert sleeps[0] > 0.0  # 0..30 s of full jitter
