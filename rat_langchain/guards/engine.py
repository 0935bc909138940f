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
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
import tenacity

from rat_langchain.errors import DeadlineExceeded
from rat_langchain.guards.breaker import CircuitBreaker
from rat_langchain.guards.classify import explain, is_retryable
from rat_langchain.guards.key import Key
from rat_langchain.guards.limiter import Limiter, Reservation
from rat_langchain.guards.retry import RetryPolicy
from rat_langchain.metrics.collector import Metrics

T = TypeVar("T")
_NULL: contextlib.nullcontext[None] = contextlib.nullcontext()
_ANULL: contextlib.nullcontext[None] = contextlib.nullcontext()  # also an async context manager


OnResult = Callable[[Any, Reservation | None], None]


class _AttemptTimedOut(TimeoutError):
    """An attempt used up its share of the call's deadline: retried while time is left, the
    call's ``DeadlineExceeded`` when it ends the call."""


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
    limiter: Limiter | None = None
    breaker: CircuitBreaker | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    stats: GuardStats = field(default_factory=GuardStats)
    metrics: Metrics | None = None

    def __post_init__(self) -> None:
        self.key = Key.of(self.key)

    @property
    def endpoint(self) -> str:
        return self.key.endpoint

    @property
    def series(self) -> Key:
        """The metrics series of this guard: its (endpoint, model) key."""
        return self.key

    def _record(self, started: float, error: BaseException | None) -> None:
        if self.metrics is not None:
            self.metrics.record_call(self.series, time.monotonic() - started, error)

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
        started = time.monotonic()
        deadline = None if self.timeout is None else started + self.timeout
        scope = asyncio.timeout(self.timeout) if self.timeout is not None else None
        try:
            async with scope or contextlib.nullcontext():
                result = await self._attempts(attempt, tokens, on_result, deadline)
        except TimeoutError as exc:
            self.stats.failures += 1
            # the whole call's scope, or an attempt's share of it, ran out: the deadline
            if (scope is not None and scope.expired()) or isinstance(exc, _AttemptTimedOut):
                error = self._deadline_error()
                self._record(started, error)
                raise error from exc
            self._record(started, exc)
            raise
        except Exception as exc:
            explained = self._failed(exc)
            self._record(started, explained)
            if explained is exc:
                raise
            raise explained from exc
        self._record(started, None)
        return result

    def _deadline_error(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"call to {self.key} did not finish within its {self.timeout}s deadline "
            "(retries included); raise performance.retries.timeout_s or the timeout= "
            "of resilient()"
        )

    def _failed(self, exc: Exception) -> BaseException:
        """Count a failed call and return what to raise: 401/403 become ``ApiKeyError``."""
        self.stats.failures += 1
        return explain(exc, self.endpoint)

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
        self._count_retry(None)
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
        the deadline stops retries before they would cross it, the HTTP timeout ends attempts,
        and a result that arrives after the deadline is ``DeadlineExceeded`` all the same."""
        self.stats.calls += 1
        started = time.monotonic()
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
                    result = self._once_sync(attempt, tokens, on_result, number)
                    if self.timeout is not None and time.monotonic() - started > self.timeout:
                        raise self._deadline_error()
                    self._record(started, None)
                    return result
        except Exception as exc:
            explained = self._failed(exc)
            self._record(started, explained)
            if explained is exc:
                raise
            raise explained from exc
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    def _once_sync(
        self, attempt: Callable[[], T], tokens: int, on_result: OnResult | None, number: int
    ) -> T:
        self._count_attempt(number)
        with self._permit() as permit:
            reservation = (
                self.limiter.acquire_blocking(self.key, tokens)
                if self.limiter is not None
                else None
            )
            if permit is not None:
                permit.restart()  # the limiter's wait is not the call's duration
            with self._outstanding():
                result = attempt()
        if on_result is not None:
            on_result(result, reservation)
        return result

    async def _once(
        self,
        attempt: Callable[[], Awaitable[T]],
        tokens: int,
        on_result: OnResult | None,
        deadline: float | None,
        number: int,
    ) -> T:
        self._count_attempt(number)
        if self.breaker is not None and self.breaker.shared is not None:
            await self.breaker.shared.refresh(self.breaker)  # another process may have tripped
        limiter = self.limiter
        with self._permit() as permit:
            waited = time.monotonic()
            reservation = await limiter.acquire(self.key, tokens) if limiter else None
            if self.metrics is not None and limiter is not None:
                waited = time.monotonic() - waited
                if waited > 0.001:  # a free bucket answers in microseconds
                    self.metrics.record_limiter_wait(self.series, waited)
            semaphore = limiter.semaphore() if limiter is not None else None
            gate = limiter.gate(self.key) if limiter is not None else None  # learned, per key
            async with semaphore or _ANULL, gate or _ANULL:
                if permit is not None:
                    permit.restart()  # the limiter's wait is not the call's duration
                result = await self._send(attempt, deadline, number)
        if on_result is not None:
            on_result(result, reservation)
        return result

    async def _send(
        self, attempt: Callable[[], Awaitable[T]], deadline: float | None, number: int
    ) -> T:
        """The attempt itself, within its share of the deadline, counted in flight."""
        budget = self._attempt_budget(deadline, number)
        share = asyncio.timeout(budget) if budget is not None else None
        with self._outstanding():
            try:
                async with share or _ANULL:
                    return await attempt()
            except TimeoutError as exc:
                self.stats.attempt_timeouts += 1
                if share is not None and share.expired():
                    raise _AttemptTimedOut(f"attempt {number} ran out of its time") from exc
                raise

    @contextlib.contextmanager
    def _outstanding(self) -> Iterator[None]:
        """One attempt out: counted in flight, a 429 reported to the limiter, and the limiter
        told when it ends, however it ends (sync and async attempts alike)."""
        metrics = self.metrics
        if metrics is not None:
            metrics.record_in_flight(self.series, 1)
        try:
            yield
        except openai.RateLimitError as exc:
            self._rate_limited(exc)
            raise
        finally:
            if metrics is not None:
                metrics.record_in_flight(self.series, -1)
            self._answered()

    def _permit(self) -> contextlib.AbstractContextManager[Any]:
        """The breaker's permit for one attempt: it records the outcome, or releases the permit
        if the attempt was cancelled."""
        return self.breaker.permit_sync() if self.breaker is not None else _NULL

    def _answered(self) -> None:
        if self.limiter is not None:
            self.limiter.acknowledge(self.key)

    def _count_retry(self, _state: Any) -> None:
        self.stats.retries += 1
        if self.metrics is not None:
            self.metrics.record_retry(self.series)

    def _count_attempt(self, number: int) -> None:
        self.stats.attempts += 1
        self.stats.max_attempts_seen = max(self.stats.max_attempts_seen, number)

    def _rate_limited(self, exc: openai.RateLimitError) -> None:
        self.stats.rate_limited += 1
        if self.metrics is not None:
            self.metrics.record_rate_limited(self.series)
        if self.limiter is not None:
            self.limiter.observe_429(self.key, exc.response.headers)
