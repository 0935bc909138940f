"""The resilience engine against the simulator over real sockets: faults, hangs, outages, limits."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from rat_langchain._tokens import count_message_tokens
from rat_langchain.errors import ApiKeyError
from rat_langchain.guards.breaker import CircuitBreaker, CircuitOpenError, State
from rat_langchain.guards.engine import DeadlineExceeded, Guard
from rat_langchain.guards.limiter import RateLimiter, Reservation
from rat_langchain.guards.retry import RetryPolicy
from rat_langchain.sim import Reply, Simulator, SimulatorThread
from tests.conftest import API_KEY
from tests.support.clock import FakeClock

MODEL = "gpt-4o-mini"
FAST_RETRY = RetryPolicy(max_attempts=6, initial_backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
async def client(loop_sim: Simulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=loop_sim.base_url, api_key=API_KEY, max_retries=0
    ) as sdk:
        yield sdk


def _messages(i: int, words: int = 5) -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join(f"word{i}x{j}" for j in range(words))}]


async def _call(
    guard: Guard, client: openai.AsyncOpenAI, i: int, words: int = 5, max_tokens: int = 20
) -> Any:
    messages = _messages(i, words)
    tokens = count_message_tokens(messages, MODEL) + max_tokens

    def on_result(raw: Any, reservation: Reservation | None) -> None:
        if reservation is not None:
            reservation.reconcile(raw.parse().usage.total_tokens)
        if guard.limiter is not None:
            guard.limiter.observe(guard.key, raw.headers)

    return await guard.run(
        lambda: client.chat.completions.with_raw_response.create(
            model=MODEL, messages=messages, max_tokens=max_tokens
        ),
        tokens=tokens,
        on_result=on_result,
    )


async def _many(n: int, concurrency: int, call: Any) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Any:
        async with gate:
            try:
                return await call(i)
            except Exception as exc:
                return exc

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(i)) for i in range(n)]
    return [t.result() for t in tasks]


async def test_500s_and_resets_are_absorbed_within_the_attempt_budget(
    loop_sim: Simulator, client: openai.AsyncOpenAI
) -> None:
    loop_sim.configure(error_rate=0.2, reset_rate=0.05, seed=11)
    breaker = CircuitBreaker("sim", window_size=50, minimum_calls=20, consecutive_failures=10)
    # 10 attempts: with 6, one call in 4000 fails every attempt (0.25^6), so one of the 300
    # failed in about one run in 14, whichever call the concurrent order gave the seeded draws
    budget = RetryPolicy(max_attempts=10, initial_backoff_s=0.01, max_backoff_s=0.05)
    guard = Guard(loop_sim.base_url, breaker=breaker, retry=budget)
    results = await _many(300, 50, lambda i: _call(guard, client, i))
    assert [r for r in results if isinstance(r, Exception)] == []
    assert guard.stats.max_attempts_seen <= budget.max_attempts
    stats = loop_sim.stats()
    assert stats.count("chat") == guard.stats.attempts  # every attempt reached the server once
    assert guard.stats.retries == guard.stats.attempts - 300
    assert stats.count("chat", 500) + stats.faults.get("reset", 0) == guard.stats.retries
    assert breaker.state == State.CLOSED


async def test_hanging_attempts_are_abandoned_in_time_and_calls_meet_their_deadline(
    loop_sim: Simulator, client: openai.AsyncOpenAI
) -> None:
    loop_sim.configure(hang_rate=0.1, seed=5)
    guard = Guard(loop_sim.base_url, retry=FAST_RETRY, timeout=2.0)
    durations: list[float] = []

    async def timed(i: int) -> Any:
        start = time.monotonic()
        try:
            return await _call(guard, client, i)
        finally:
            durations.append(time.monotonic() - start)

    results = await _many(200, 100, timed)
    failures = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(f, DeadlineExceeded) for f in failures)
    assert len(failures) <= 4  # >= 98 % succeed
    assert guard.stats.attempt_timeouts >= 10  # hangs happened and were cut short
    assert max(durations) < 2.0 + 0.5  # asyncio.timeout ends every call at its deadline


async def test_outage_opens_the_breaker_fast_then_fails_fast_then_recovers(
    loop_sim: Simulator, client: openai.AsyncOpenAI
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("sim", consecutive_failures=5, wait_s=5.0, clock=clock)
    guard = Guard(loop_sim.base_url, breaker=breaker, retry=FAST_RETRY)
    loop_sim.configure(error_rate=1.0)
    with pytest.raises(CircuitOpenError):
        await _call(guard, client, 0)  # the fifth failed attempt opens it; the sixth is refused
    assert breaker.state == State.OPEN
    assert loop_sim.stats().count("chat") == 5  # retries stopped as soon as it opened
    reached = loop_sim.stats().count("chat")
    elapsed: list[float] = []
    for i in range(100):
        start = time.perf_counter()
        with pytest.raises(CircuitOpenError) as info:
            await _call(guard, client, i)
        elapsed.append(time.perf_counter() - start)
    assert info.value.retry_in == pytest.approx(5.0)
    assert loop_sim.stats().count("chat") == reached  # nothing reached the server
    assert statistics.median(elapsed) < 0.005
    loop_sim.configure(error_rate=0.0)
    clock.now += 5.0
    results = await asyncio.gather(*(_call(guard, client, i) for i in range(2)))
    assert len(results) == 2
    assert breaker.state == State.CLOSED
    assert breaker.transitions[(State.HALF_OPEN, State.CLOSED)] == 1


async def test_caller_errors_never_open_the_breaker(
    loop_sim: Simulator, client: openai.AsyncOpenAI
) -> None:
    breaker = CircuitBreaker("sim", consecutive_failures=3, minimum_calls=3)
    guard = Guard(loop_sim.base_url, breaker=breaker, retry=FAST_RETRY)
    loop_sim.push(*[Reply(status=400, error_type="invalid_request_error")] * 20)
    for i in range(20):
        with pytest.raises(openai.BadRequestError):
            await _call(guard, client, i)
    assert breaker.state == State.CLOSED
    assert loop_sim.stats().count("chat", 400) == 20  # and none was retried


async def test_bad_key_fails_at_once_with_a_clear_error(
    loop_sim: Simulator, client: openai.AsyncOpenAI
) -> None:
    loop_sim.configure(api_key="sk-the-right-one")
    guard = Guard((loop_sim.base_url, "gpt-4o-mini"), retry=FAST_RETRY)
    with pytest.raises(ApiKeyError, match="OPENAI_API_KEY") as info:
        await _call(guard, client, 0)
    assert API_KEY not in str(info.value)
    assert loop_sim.stats().count("chat", 401) == 1


async def test_limiter_keeps_the_server_from_answering_429(sim: SimulatorThread) -> None:
    # The server on its own loop, as a real one. Its limits bind over 5 s windows (a 60 s window,
    # OpenAI's documented one, would make this test take minutes): 100 req/s, 10k tokens/s.
    sim.configure(rpm=6000, tpm=600_000, limit_window_s=5.0)
    limiter = RateLimiter(rpm=6000, tpm=600_000, safety_margin=0.9, burst_s=5.0)
    guard = Guard(sim.base_url, limiter=limiter, retry=FAST_RETRY)
    client = openai.AsyncOpenAI(base_url=sim.base_url, api_key=API_KEY, max_retries=0)
    sizes = [10 + (i * 37) % 110 for i in range(300)]  # prompts of about 50-600 tokens
    results = await _many(300, 100, lambda i: _call(guard, client, i, words=sizes[i]))
    await client.close()
    assert [r for r in results if isinstance(r, Exception)] == []
    stats = sim.stats()
    assert stats.count("chat", 429) <= 3  # <= 1 %
    assert stats.count("chat", 200) == 300
    assert stats.prompt_tokens > 60_000  # beyond the 45k burst: the token bucket bound
