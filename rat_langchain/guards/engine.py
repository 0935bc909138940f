"""The per-call engine shared by the Runnable wrapper and the resilient chat model.

Order: one deadline over the whole call → retries → for each attempt: breaker permit → limiter
reservation (and the concurrency bounds) → the attempt, under its share of the remaining deadline.
The breaker sees every attempt, so a dead endpoint opens it within seconds instead of after each
call has exhausted its retries; once open, ``CircuitOpenError`` is not retried and fails fast.

One decision core, two thin drivers (as httpx's ``BaseClient`` under ``Client``/``AsyncClient``
and tenacity's ``BaseRetrying.iter`` under its loops): ``_Call`` decides (attempt numbers, each
attempt's share of the deadline, whether and when to retry) and ``_admitted`` is the one
admission (shared breaker state, permit, limiter, concurrency bounds, metrics). ``run`` awaits
them; ``run_sync`` runs the same admission on the sync entry points' loop (``_portal``) and the
attempt in the caller's thread, so a sync caller honours everything an async one does. Before,
the sync side had an engine of its own that skipped the learned concurrency limit, the
concurrency bound and another process's open breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import openai

from rat_langchain import _portal
from rat_langchain.errors import DeadlineExceeded
from rat_langchain.guards.breaker import CircuitBreaker
from rat_langchain.guards.classify import explain
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
    call's ``DeadlineExceeded`` when it ends the call.

    ``squeezed``: the attempt started with less than a fair share of the deadline (the call
    waited in this client's limiter or gate, or earlier attempts used the time), so its timeout
    says nothing of the endpoint and the breaker ignores it (guards.classify). Before, calls
    that queued started with a sliver, timed out on a healthy server and opened its breaker."""

    def __init__(self, message: str, *, squeezed: bool) -> None:
        super().__init__(message)
        self.squeezed = squeezed


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

    def _call(self) -> _Call:
        self.stats.calls += 1
        started = time.monotonic()
        deadline = None if self.timeout is None else started + self.timeout
        return _Call(self, started, deadline)

    async def run(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        tokens: int = 0,
        on_result: OnResult | None = None,
    ) -> T:
        """Run ``attempt`` (a fresh awaitable per call) under the whole policy."""
        call = self._call()
        scope = asyncio.timeout(self.timeout) if self.timeout is not None else None
        try:
            async with scope or _ANULL:
                while True:
                    call.next_attempt()
                    try:
                        async with self._admitted(tokens) as (reservation, number):
                            result = await self._send(attempt, call, number)
                        break
                    except Exception as exc:
                        wait = call.retry_in(exc)
                        if wait is None:
                            raise
                    self._count_retry()
                    await self.sleep(wait)
        except TimeoutError as exc:
            # the whole call's scope, or an attempt's share of it, ran out: the deadline
            timed_out = (scope is not None and scope.expired()) or isinstance(exc, _AttemptTimedOut)
            call.fail(self._deadline_error() if timed_out else exc, exc)
        except Exception as exc:
            call.fail(exc, exc)
        if on_result is not None:
            on_result(result, reservation)
        call.succeeded()
        return result

    def run_sync(
        self,
        attempt: Callable[[], T],
        *,
        tokens: int = 0,
        on_result: OnResult | None = None,
    ) -> T:
        """The same policy for sync callers: the admission (breaker, limiter, concurrency
        bounds) waits on the sync entry points' loop, the attempt runs in this thread. A
        running sync attempt cannot be interrupted, so the deadline bounds the wait for
        admission and the retries' sleeps, the HTTP timeout ends attempts, and a result that
        arrives after the deadline is ``DeadlineExceeded`` all the same."""
        call = self._call()
        try:
            while True:
                call.next_attempt()
                try:
                    result, reservation = self._once_sync(attempt, tokens, call)
                    break
                except Exception as exc:
                    wait = call.retry_in(exc)
                    if wait is None:
                        raise
                self._count_retry()
                time.sleep(wait)
            if call.late():
                raise self._deadline_error()
        except Exception as exc:
            call.fail(exc, exc)
        if on_result is not None:
            on_result(result, reservation)
        call.succeeded()
        return result

    def _once_sync(
        self, attempt: Callable[[], T], tokens: int, call: _Call
    ) -> tuple[T, Reservation | None]:
        """One sync attempt: admitted on the portal loop (within what is left of the
        deadline), sent here, the admission left on the portal loop (it records the outcome
        and frees the slots)."""
        admitted = self._admitted(tokens)
        try:
            reservation, number = _portal.run(_within(admitted.__aenter__(), call.remaining()))
        except TimeoutError as exc:  # the deadline ran out while queued for admission
            raise self._deadline_error() from exc
        try:
            with self._outstanding(number, call):
                result = attempt()
        except BaseException as exc:
            _portal.run(admitted.__aexit__(type(exc), exc, exc.__traceback__))
            raise
        _portal.run(admitted.__aexit__(None, None, None))
        return result, reservation

    def _deadline_error(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"call to {self.key} did not finish within its {self.timeout}s deadline "
            "(retries included); raise performance.retries.timeout_s or the timeout= "
            "of resilient()"
        )

    @contextlib.asynccontextmanager
    async def _admitted(self, tokens: int) -> AsyncIterator[tuple[Reservation | None, int | None]]:
        """One attempt's admission, the same for both drivers: another process's open
        breaker, the breaker's permit (it records the attempt's outcome on exit), the
        limiter's reservation, the concurrency bound and the key's learned gate. Yields the
        reservation and the gate's admission number (None without a gate), which a 429 of
        the attempt reports to the limiter."""
        if self.breaker is not None and self.breaker.shared is not None:
            await self.breaker.shared.refresh(self.breaker)  # another process may have tripped
        limiter = self.limiter
        with self._permit() as permit:
            waited = time.monotonic()
            # the key's window first, then its rate: a caller let through the window goes to
            # the rate as it is then (the window may have learned one meanwhile, or been
            # refused); taking the rate first would release a queue that had passed an open
            # rate all at once into a rate that had closed
            gate = limiter.gate(self.key) if limiter is not None else None  # learned, per key
            async with gate or _ANULL as number:
                reservation = await limiter.acquire(self.key, tokens) if limiter else None
                if self.metrics is not None and limiter is not None:
                    waited = time.monotonic() - waited
                    if waited > 0.001:  # a free bucket answers in microseconds
                        self.metrics.record_limiter_wait(self.series, waited)
                semaphore = limiter.semaphore() if limiter is not None else None
                async with semaphore or _ANULL:
                    if permit is not None:
                        permit.restart()  # the limiter's wait is not the call's duration
                    yield reservation, number

    async def _send(
        self, attempt: Callable[[], Awaitable[T]], call: _Call, number: int | None
    ) -> T:
        """The attempt itself, within its share of the deadline, counted in flight."""
        budget = call.budget()
        share = asyncio.timeout(budget) if budget is not None else None
        with self._outstanding(number, call):
            try:
                async with share or _ANULL:
                    return await attempt()
            except TimeoutError as exc:
                self.stats.attempt_timeouts += 1
                if share is not None and share.expired():
                    assert budget is not None
                    squeezed = budget < call.fair_share()
                    raise _AttemptTimedOut(
                        f"attempt {call.number} ran out of its {budget:.3g} s", squeezed=squeezed
                    ) from exc
                raise

    @contextlib.contextmanager
    def _outstanding(self, number: int | None, call: _Call) -> Iterator[None]:
        """One attempt out (``number``: its admission through the gate): counted in flight, a
        429 reported to the limiter (the pause it sets is the call's ``held``), and the limiter
        told when it ends, however it ends (sync and async attempts alike)."""
        metrics = self.metrics
        if metrics is not None:
            metrics.record_in_flight(self.series, 1)
        call.held = None
        try:
            yield
        except openai.RateLimitError as exc:
            call.held = self._rate_limited(exc, number)
            if call.held is not None and call.throttled_at is None:
                call.throttled_at = time.monotonic()
            raise
        finally:
            if metrics is not None:
                metrics.record_in_flight(self.series, -1)
            if self.limiter is not None:
                self.limiter.acknowledge(self.key)

    def _permit(self) -> contextlib.AbstractContextManager[Any]:
        """The breaker's permit for one attempt: it records the outcome, or releases the permit
        if the attempt was cancelled."""
        return self.breaker.permit() if self.breaker is not None else _NULL

    def _count_retry(self) -> None:
        self.stats.retries += 1
        if self.metrics is not None:
            self.metrics.record_retry(self.series)

    def _count_attempt(self, number: int) -> None:
        self.stats.attempts += 1
        self.stats.max_attempts_seen = max(self.stats.max_attempts_seen, number)

    def _rate_limited(self, exc: openai.RateLimitError, number: int | None) -> float | None:
        """Count a 429 and tell the limiter; the seconds it now holds the key (None: no
        limiter)."""
        self.stats.rate_limited += 1
        if self.metrics is not None:
            self.metrics.record_rate_limited(self.series)
        if self.limiter is None:
            return None
        return self.limiter.observe_429(self.key, exc.response.headers, admitted=number)


@dataclass
class _Call:
    """One call's decisions, free of I/O, asked by both drivers: the attempts' numbers, each
    attempt's share of the deadline, whether a failure is retried and after how long, and what
    the call raises and records when it ends."""

    guard: Guard
    started: float
    deadline: float | None
    number: int = 0
    # the seconds the limiter holds the key after the last attempt's 429 (None: no 429, or no
    # limiter): the limiter's pause, bucket and gate then decide when the retry goes
    held: float | None = None
    # when the call's first 429 a limiter held came (see RetryPolicy.next_wait's throttled_s)
    throttled_at: float | None = None

    def next_attempt(self) -> int:
        self.number += 1
        self.guard._count_attempt(self.number)
        return self.number

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def late(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def budget(self) -> float | None:
        """The first attempts get half of what is left, the last gets all of it, so an attempt
        that hangs is abandoned with time to spare for another."""
        remaining = self.remaining()
        if remaining is None:
            return None
        retry = self.guard.retry
        attempts_left = (retry.max_attempts if retry else 1) - self.number + 1
        return max(0.0, remaining / 2 if attempts_left > 1 else remaining)

    def fair_share(self) -> float:
        """The least time an attempt must have had for its timeout to be the endpoint's
        failure: half of the deadline's even share among the attempts it allows. An unqueued
        call's attempts always have it (the first gets half the deadline, the next ones what
        is left); a call that waited most of its deadline in this client does not."""
        retry = self.guard.retry
        timeout = self.guard.timeout or 0.0
        return timeout / (2 * (retry.max_attempts if retry else 1))

    def retry_in(self, exc: BaseException) -> float | None:
        """Seconds to wait before the next attempt, or None: ``exc`` ends the call."""
        retry = self.guard.retry
        if retry is None:
            return None
        throttled = self.throttled_at
        return retry.next_wait(
            exc,
            self.number,
            self.remaining(),
            held=self.held,
            throttled_s=None if throttled is None else time.monotonic() - throttled,
        )

    def fail(self, error: BaseException, cause: BaseException) -> NoReturn:
        """Count and record a failed call, and raise ``error`` (401/403 become
        ``ApiKeyError``), chained to ``cause`` when it is another exception."""
        guard = self.guard
        guard.stats.failures += 1
        explained = (
            error
            if isinstance(error, DeadlineExceeded)
            else explain(error, guard.endpoint, tenant=guard.key.tenant)
        )
        guard._record(self.started, explained)
        if explained is cause:
            raise explained
        raise explained from cause

    def succeeded(self) -> None:
        self.guard._record(self.started, None)


async def _within(admission: Awaitable[T], seconds: float | None) -> T:
    """The sync driver's admission, bounded by what is left of the call's deadline."""
    if seconds is None:
        return await admission
    async with asyncio.timeout(max(0.0, seconds)):
        return await admission
