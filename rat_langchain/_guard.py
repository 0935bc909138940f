"""The per-call engine shared by the Runnable wrapper and the resilient chat model.

Order: one deadline over the whole call → retries → for each attempt: breaker permit → limiter
reservation (and the concurrency bound) → the attempt, under its share of the remaining deadline.
The breaker sees every attempt, so a dead endpoint opens it within seconds instead of after each
call has exhausted its retries; once open, ``CircuitOpenError`` is not retried and fails fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
import tenacity

from rat_langchain.breaker import CircuitBreaker, Outcome
from rat_langchain.errors import DeadlineExceeded
from rat_langchain.ratelimit import Key, RateLimiter, Reservation
from rat_langchain.retry import RetryPolicy, explain, is_retryable

T = TypeVar("T")
_NULL = contextlib.nullcontext()


OnResult = Callable[[Any, Reservation | None], None]


@dataclass
class GuardStats:
    """Counters a test or a metrics exporter can read."""

    calls: int = 0
    attempts: int = 0
    retries: int = 0
    max_attempts_seen: int = 0
    failures: int = 0
    rate_limited: int = 0
    attempt_timeouts: int = 0


@dataclass
class Guard:
    """Deadline, breaker, limiter and retries around one kind of call to one key."""

    key: Key
    limiter: RateLimiter | None = None
    breaker: CircuitBreaker | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None
    endpoint: str = ""
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    stats: GuardStats = field(default_factory=GuardStats)

    def _attempt_budget(self, deadline: float | None, attempt_number: int) -> float | None:
        """The first attempts get half of what is left, the last gets all of it, so an attempt
        that hangs is abandoned with time to spare for another."""
        if deadline is None:
            return None
        remaining = deadline - time.monotonic()
        attempts_left = (self.retry.max_attempts if self.retry else 1) - attempt_number + 1
        return max(0.0, remaining / 2 if attempts_left > 1 else remaining)

    async def run(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        tokens: int = 0,
        on_result: OnResult | None = None,
    ) -> T:
        """Run ``attempt`` (a fresh awaitable per call) under the whole policy."""
        self.stats.calls += 1
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        scope = asyncio.timeout(self.timeout) if self.timeout is not None else None
        try:
            async with scope or contextlib.nullcontext():
                return await self._attempts(attempt, tokens, on_result, deadline)
        except TimeoutError as exc:
            self.stats.failures += 1
            if scope is not None and scope.expired():
                raise DeadlineExceeded(
                    f"call to {self.key!r} did not finish within its {self.timeout}s deadline "
                    f"(retries included); raise performance.retries.timeout_s or the timeout= "
                    "of resilient()"
                ) from exc
            raise
        except Exception as exc:
            self.stats.failures += 1
            explained = explain(exc, self.endpoint)
            if explained is exc:
                raise
            raise explained from exc

    async def _attempts(
        self,
        attempt: Callable[[], Awaitable[T]],
        tokens: int,
        on_result: OnResult | None,
        deadline: float | None,
    ) -> T:
        policy = self.retry
        try:
            return await self._once(attempt, tokens, on_result, deadline, 1)
        except Exception as exc:
            if policy is None or policy.max_attempts <= 1 or not is_retryable(exc):
                raise
            first = exc
        # The success path builds no tenacity state (it cost ~70 us a call, measured in
        # benchmarks/bench_limiter.py); from the first retryable failure on, tenacity drives.
        delay = policy.first_wait(first)
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and delay >= remaining:
            raise first
        self.stats.retries += 1
        await self.sleep(delay)
        retrying = policy.retrying(
            max_attempts=policy.max_attempts - 1,
            deadline_s=None if deadline is None else deadline - time.monotonic(),
            sleep=self.sleep,
            before_sleep=self._count_retry,
        )
        async for state in retrying:
            with state:
                number = state.retry_state.attempt_number + 1
                return await self._once(attempt, tokens, on_result, deadline, number)
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    def run_sync(
        self,
        attempt: Callable[[], T],
        *,
        tokens: int = 0,
        on_result: OnResult | None = None,
    ) -> T:
        """The same policy for sync callers. A running sync attempt cannot be interrupted, so
        the deadline stops retries before they would cross it; the HTTP timeout ends attempts."""
        self.stats.calls += 1
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.max_attempts if self.retry else 1)
            | (tenacity.stop_before_delay(self.timeout) if self.timeout else tenacity.stop_never),
            wait=self.retry.wait() if self.retry else tenacity.wait_none(),
            retry=tenacity.retry_if_exception(is_retryable),
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            for state in retrying:
                with state:
                    number = state.retry_state.attempt_number
                    return self._once_sync(attempt, tokens, on_result, number)
        except Exception as exc:
            self.stats.failures += 1
            explained = explain(exc, self.endpoint)
            if explained is exc:
                raise
            raise explained from exc
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    def _once_sync(
        self, attempt: Callable[[], T], tokens: int, on_result: OnResult | None, number: int
    ) -> T:
        self.stats.attempts += 1
        self.stats.max_attempts_seen = max(self.stats.max_attempts_seen, number)
        permit = self.breaker.acquire() if self.breaker is not None else None
        reservation = None
        start = time.monotonic()
        try:
            if self.limiter is not None:
                reservation = self.limiter.acquire_blocking(self.key, tokens)
            start = time.monotonic()
            result = attempt()
        except Exception as exc:
            if isinstance(exc, openai.RateLimitError):
                self.stats.rate_limited += 1
                if self.limiter is not None:
                    self.limiter.observe_429(self.key, exc.response.headers)
            if permit is not None and self.breaker is not None:
                permit.record(self.breaker.classifier(exc), time.monotonic() - start)
            raise
        except BaseException:
            if permit is not None:
                permit.release()
            raise
        if permit is not None:
            permit.record(Outcome.SUCCESS, time.monotonic() - start)
        if on_result is not None:
            on_result(result, reservation)
        return result

    def _count_retry(self, _state: Any) -> None:
        self.stats.retries += 1

    async def _once(
        self,
        attempt: Callable[[], Awaitable[T]],
        tokens: int,
        on_result: OnResult | None,
        deadline: float | None,
        number: int,
    ) -> T:
        self.stats.attempts += 1
        self.stats.max_attempts_seen = max(self.stats.max_attempts_seen, number)
        async with self._admitted(tokens) as (timer, reservation):
            start = time.monotonic()
            budget = self._attempt_budget(deadline, number)
            try:
                async with asyncio.timeout(budget) if budget is not None else _NULL:
                    result = await attempt()
            except TimeoutError:
                self.stats.attempt_timeouts += 1
                raise
            except openai.RateLimitError as exc:
                self.stats.rate_limited += 1
                if self.limiter is not None:
                    self.limiter.observe_429(self.key, exc.response.headers)
                raise
            finally:
                timer.duration = time.monotonic() - start
            if on_result is not None:
                on_result(result, reservation)
            return result

    @contextlib.asynccontextmanager
    async def _admitted(self, tokens: int) -> AsyncIterator[tuple[Any, Reservation | None]]:
        permit = self.breaker.acquire() if self.breaker is not None else None
        holder = _PermitTimer(permit)
        reservation: Reservation | None = None
        try:
            if self.limiter is not None:
                reservation = await self.limiter.acquire(self.key, tokens)
                semaphore = self.limiter.semaphore()
            else:
                semaphore = None
            async with semaphore or contextlib.nullcontext():
                yield holder, reservation
        except BaseException as exc:
            if permit is not None:
                if isinstance(exc, Exception):
                    breaker = self.breaker
                    assert breaker is not None
                    permit.record(breaker.classifier(exc), holder.duration)
                else:
                    permit.release()
            raise
        if permit is not None:
            permit.record(Outcome.SUCCESS, holder.duration)


class _PermitTimer:
    """Carries the attempt's own duration (limiter wait excluded) to the breaker."""

    __slots__ = ("duration", "permit")

    def __init__(self, permit: Any) -> None:
        self.permit = permit
        self.duration: float | None = None
