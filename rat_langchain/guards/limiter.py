"""The local rate limiter: requests/min and tokens/min per (endpoint, model), waited for first
in, first out.

Why not LangChain's ``InMemoryRateLimiter``: it counts requests only, polls with ``sleep`` and
starts empty. Here both buckets are charged together (a request never holds one without the other),
waiters queue first-in first-out so a large request is not starved by small ones, and nothing polls:
one timer per key wakes the head of the queue when its capacity will be there (as aiolimiter does).

This module is the queue and its timers, and the ``Limiter`` protocol the guards use. The parts
it stands on have homes of their own: the bucket and the limit (guards.bucket), a key's state
(guards.state), what the server's answers do to it (guards.feedback, which the Redis limiter
uses too), the learned concurrency gate (guards.gate), LangChain's adapter (guards.adapter).

Time is a parameter (``clock``, ``call_later``) so the logic is tested without sleeping.

Size: ~450 lines, of which a third are the one-line delegations that make the local limiter
and the Redis one the same ``Limiter``; the queue itself is ~200.
"""

from __future__ import annotations

import asyncio
import random as _random
import time
import weakref
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from rat_langchain.config import KeysConfig, RateLimitingConfig, RetriesConfig
from rat_langchain.errors import BackpressureError, RequestTooLarge
from rat_langchain.guards.adapter import LangChainRateLimiter
from rat_langchain.guards.bucket import START_RPM, START_TPM, RateLimit, TokenBucket, check_size
from rat_langchain.guards.feedback import Feedback
from rat_langchain.guards.gate import Gate, gate_for
from rat_langchain.guards.key import Key, KeyLike
from rat_langchain.guards.remember import LimitMemory
from rat_langchain.guards.state import KeyState, TimerHandle, Waiter

__all__ = [
    "START_RPM",
    "START_TPM",
    "BackpressureError",
    "LangChainRateLimiter",
    "Limiter",
    "RateLimit",
    "RateLimiter",
    "RequestTooLarge",
    "Reservation",
    "TokenBucket",
    "check_size",
]

# One default per setting: the config model's (performance.rate_limiting, .retries).
_DEFAULTS = RateLimitingConfig()
_RETRY_DEFAULTS = RetriesConfig()
_KEYS = KeysConfig()

CallLater = Callable[[float, Callable[[], None]], TimerHandle]
Settle = Callable[[Key, int, int], None]  # (key, tokens back, requests back)


@dataclass
class Reservation:
    """What one ``acquire`` took. ``reconcile(used)`` returns unused tokens (or charges extra).

    It settles with the limiter that granted it (``_settle``), whichever that is: a Redis
    limiter's shared buckets, or the local buckets that stood in while Redis was down.
    """

    key: Key
    tokens: int
    _settle: Settle | None = field(default=None, repr=False)
    _settled: bool = field(default=False, repr=False)

    def reconcile(self, used_tokens: int) -> None:
        if self._settled or self._settle is None:
            return
        self._settled = True
        self._settle(self.key, self.tokens - used_tokens, 0)

    def release(self) -> None:
        """The request was never sent: give back its request slot and all its tokens."""
        if self._settled or self._settle is None:
            return
        self._settled = True
        self._settle(self.key, self.tokens, 1)


def limiter_stats(**extra: Any) -> dict[str, Any]:
    """The counters every limiter keeps (``extra``: a backend's own), all at zero."""
    return {
        "acquired": 0,
        "waited": 0,
        "wait_s": 0.0,
        "paused": 0,
        "too_large": 0,
        "rejected": 0,
        **extra,
    }


@runtime_checkable
class Limiter(Protocol):
    """What the guards need of a limiter: :class:`RateLimiter` (this process) and
    :class:`~rat_langchain.guards.redis.RedisRateLimiter` (shared through Redis) both are one."""

    stats: dict[str, Any]

    @property
    def default(self) -> RateLimit: ...

    def limit_for(self, key: KeyLike) -> RateLimit: ...

    async def acquire(self, key: KeyLike, tokens: int = 0) -> Reservation: ...

    def try_acquire(self, key: KeyLike, tokens: int = 0) -> Reservation | None: ...

    def semaphore(self) -> asyncio.Semaphore | None: ...

    def gate(self, key: KeyLike) -> AbstractAsyncContextManager[int] | None: ...

    def acknowledge(self, key: KeyLike) -> None: ...

    def observe(self, key: KeyLike, headers: Mapping[str, str]) -> None: ...

    def observe_429(
        self, key: KeyLike, headers: Mapping[str, str], *, admitted: int | None = None
    ) -> float: ...

    def pause(self, key: KeyLike, seconds: float) -> None: ...

    def limits(self) -> dict[Key, dict[str, Any]]: ...

    def per_minute(self, key: KeyLike) -> tuple[float | None, float | None]: ...


class RateLimiter:
    """RPM + TPM token buckets per (api, model), with a safety margin and server feedback.

    Example::

        limiter = RateLimiter(rpm=500, tpm=200_000)
        key = ("https://api.openai.com/v1", "gpt-4o-mini")
        reservation = await limiter.acquire(key, tokens=812)
        response = await client.chat.completions.create(...)
        reservation.reconcile(response.usage.total_tokens)   # unused tokens go back
        limiter.observe(key, response_headers)                # x-ratelimit-* tighten the buckets

    A key is ``(api, model)`` or a plain string; per-model limits apply to the model part.
    ``chat_model = ChatOpenAI(rate_limiter=limiter.as_langchain(key))`` plugs into LangChain.
    """

    def __init__(
        self,
        rpm: int | Literal["auto"] | None = _DEFAULTS.rpm_limit,
        tpm: int | Literal["auto"] | None = _DEFAULTS.tpm_limit,
        *,
        safety_margin: float = _DEFAULTS.safety_margin,
        burst_s: float = _DEFAULTS.burst_s,
        per_model: Mapping[str, RateLimit] | None = None,
        max_concurrency: int | None = None,
        first_hold_s: float = _DEFAULTS.first_hold_s,
        max_queue: int | None = _DEFAULTS.max_queue,
        max_queue_wait_s: float | None = _DEFAULTS.max_queue_wait_s,
        borrow: bool = False,
        max_pause_s: float = _RETRY_DEFAULTS.max_server_wait_s,
        open_until_refused: bool = True,
        max_keys: int = _KEYS.max_keys,
        idle_s: float = _KEYS.idle_s,
        memory: LimitMemory | None = None,
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater | None = None,
        random: Callable[[], float] = _random.random,
    ) -> None:
        """``max_pause_s``: the longest a server's answer (``retry-after``, a reset header) may
        hold a key; server headers are untrusted and a Retry-After of days must not stall every
        later call (``retries.max_server_wait_s``).

        ``borrow=True``: a request larger than the TPM bucket waits for a full bucket and goes
        into debt instead of raising ``RequestTooLarge`` (a share of a larger budget that the
        caller has already checked the request against).

        ``open_until_refused`` (the default): a limit left on ``"auto"`` is not applied until
        the server refuses (a 429) or announces it; until then a slow-starting window of
        attempts in flight bounds the key, as plain ``ChatOpenAI`` is bounded by its callers
        (see ``guards.learn``). ``False``: start at ``START_RPM``/``START_TPM`` and grow.

        ``max_keys`` / ``idle_s``: the keys whose state is kept (``performance.keys``)."""
        if max_queue is not None and max_queue < 0:
            raise ValueError(f"max_queue must be >= 0 or None, got {max_queue}")
        if max_queue_wait_s is not None and max_queue_wait_s < 0:
            raise ValueError(f"max_queue_wait_s must be >= 0 or None, got {max_queue_wait_s}")
        self.default = RateLimit.of(rpm, tpm, safety_margin, burst_s)
        self.max_queue = max_queue
        self.max_queue_wait_s = max_queue_wait_s
        self.max_concurrency = max_concurrency
        self.feedback = Feedback(
            self.default,
            per_model=per_model,
            max_concurrency=max_concurrency,
            first_hold_s=first_hold_s,
            borrow=borrow,
            max_pause_s=max_pause_s,
            open_until_refused=open_until_refused,
            max_keys=max_keys,
            idle_s=idle_s,
            memory=memory,
            clock=clock,
            random=random,
        )
        self.per_model = self.feedback.per_model
        self.max_pause_s = max_pause_s
        self._clock = clock
        self._call_later = call_later
        self._lock = self.feedback.lock  # one lock over the key states and their queues
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
        self._semaphores = weakref.WeakKeyDictionary()
        self.stats = limiter_stats()

    @staticmethod
    def config_args(config: RateLimitingConfig) -> dict[str, Any]:
        """The constructor's arguments for ``performance.rate_limiting`` (also used by the
        Redis limiter, whose local stand-in takes the same)."""
        per_model = {
            model: RateLimit.of(
                limits.rpm_limit or config.rpm_limit,
                limits.tpm_limit or config.tpm_limit,
                config.safety_margin,
                config.burst_s,
            )
            for model, limits in config.per_model.items()
        }
        return {
            "rpm": config.rpm_limit,
            "tpm": config.tpm_limit,
            "safety_margin": config.safety_margin,
            "burst_s": config.burst_s,
            "per_model": per_model,
            "first_hold_s": config.first_hold_s,
            "max_queue": config.max_queue,
            "max_queue_wait_s": config.max_queue_wait_s,
        }

    @classmethod
    def from_config(cls, config: RateLimitingConfig, **kwargs: Any) -> RateLimiter:
        return cls(**{**cls.config_args(config), **kwargs})

    def limit_for(self, key: KeyLike) -> RateLimit:
        return self.feedback.limit_for(key)

    def _state(self, key: Key) -> KeyState:
        return self.feedback.state(key)

    def _schedule(self, key: Key, state: KeyState, loop: asyncio.AbstractEventLoop) -> None:
        """Serve the queue head(s) that fit now; arm one timer for the next. Lock held."""
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        while state.waiters:
            head = state.waiters[0]
            if head.future.done():  # cancelled while queued
                state.waiters.popleft()
                continue
            wait = state.wait_time(head.tokens)
            if wait > 0:
                call_later = self._call_later or loop.call_later
                state.timer = call_later(wait, lambda: self._wake(key, loop))
                return
            state.take(head.tokens)
            state.waiters.popleft()
            head.future.set_result(None)

    def _wake(self, key: Key, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            state = self.feedback.known(key)
            if state is not None:
                state.timer = None
                self._schedule(key, state, loop)

    # -- acquiring -----------------------------------------------------------------------------

    def try_acquire(self, key: KeyLike, tokens: int = 0) -> Reservation | None:
        """Take capacity now if it is there and nobody is queued ahead; else None."""
        key = Key.of(key)
        with self._lock:
            state = self._state(key)
            self._check(state, key, tokens)
            if state.waiters or not state.try_take(tokens):
                return None
            self.stats["acquired"] += 1
        return Reservation(key, tokens, self._settle)

    async def acquire(self, key: KeyLike, tokens: int = 0) -> Reservation:
        """Wait (first in, first out) until one request and ``tokens`` tokens are available."""
        key = Key.of(key)
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._state(key)
            self._check(state, key, tokens)
            if not state.waiters and state.try_take(tokens):
                self.stats["acquired"] += 1
                return Reservation(key, tokens, self._settle)
            self._backpressure(state, key, tokens)
            waiter = Waiter(loop.create_future(), tokens)
            state.waiters.append(waiter)
            self._schedule(key, state, loop)
        started = self._clock()
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                if waiter.future.done() and not waiter.future.cancelled():
                    # granted, then cancelled before it could run: give the capacity back
                    self._give_back(state, tokens, requests=1)
                else:
                    waiter.future.cancel()
                with_waiters = state.waiters
                if waiter in with_waiters:
                    with_waiters.remove(waiter)
                self._schedule(key, state, loop)  # the next in line may fit now
            raise
        with self._lock:
            self.stats["acquired"] += 1
            self.stats["waited"] += 1
            self.stats["wait_s"] += self._clock() - started
        return Reservation(key, tokens, self._settle)

    def _backpressure(self, state: KeyState, key: Key, tokens: int) -> None:
        """Refuse to queue past ``max_queue`` callers or ``max_queue_wait_s``. Lock held."""
        queued = sum(1 for w in state.waiters if not w.future.done())
        reason = None
        if self.max_queue is not None and queued >= self.max_queue:
            reason = f"is full (max_queue={self.max_queue})"
        expected = 0.0
        if self.max_queue_wait_s is not None:
            expected = state.queue_wait(tokens)
            if reason is None and expected > self.max_queue_wait_s:
                reason = f"would wait too long (max_queue_wait_s={self.max_queue_wait_s})"
        if reason is not None:
            self.stats["rejected"] += 1
            raise BackpressureError(key, queued, expected, reason)

    def _check(self, state: KeyState, key: Key, tokens: int) -> None:
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        try:
            state.check_size(tokens, key)
        except RequestTooLarge:
            self.stats["too_large"] += 1
            raise

    @staticmethod
    def _give_back(state: KeyState, tokens: int, *, requests: int = 0) -> None:
        if state.tokens is not None and tokens:
            if tokens > 0:
                state.tokens.give(tokens)
            else:
                state.tokens.take(-tokens)
        if state.requests is not None and requests:
            state.requests.give(requests)
        if requests:  # a grant that never went out
            state.sent_out = max(0, state.sent_out - requests)

    def _settle(self, key: Key, tokens: int, requests: int) -> None:
        """A reservation settles: ``tokens`` (negative: an extra charge) and ``requests``
        come back to the buckets of ``key``."""
        with self._lock:
            state = self.feedback.known(key)
            if state is None:
                return
            self._give_back(state, tokens, requests=requests)
            self._rearm(key, state)

    def _rearm(self, key: Key, state: KeyState) -> None:
        """Re-evaluate the queue after capacity changed. Lock held."""
        if state.waiters:
            loop = state.waiters[0].future.get_loop()
            if loop.is_running() and not loop.is_closed():
                # call_soon_threadsafe: reconcile may run on another thread (sync callers)
                loop.call_soon_threadsafe(self._wake, key, loop)

    def gate(self, key: KeyLike) -> Gate | None:
        """Bounds attempts of ``key`` in flight where the server announces no limits and has
        answered 429 (see ``guards.learn.Concurrency``); None for a key that never learns it."""
        return gate_for(self.feedback, key)

    def semaphore(self) -> asyncio.Semaphore | None:
        """Bounds calls in flight (``max_parallel_llm_calls``), independent of the rates."""
        if self.max_concurrency is None:
            return None
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(loop)
        if sem is None:
            sem = self._semaphores[loop] = asyncio.Semaphore(self.max_concurrency)
        return sem

    # -- feedback from the server (guards.feedback), and the queue that follows it -------------

    def acknowledge(self, key: KeyLike, *, busy: bool | None = None) -> None:
        """An attempt for ``key`` completed (see ``Feedback.acknowledge``)."""
        key = Key.of(key)
        if self.feedback.acknowledge(key, busy=busy):
            with self._lock:
                self._rearm(key, self._state(key))

    def observe(self, key: KeyLike, headers: Mapping[str, str]) -> None:
        """Follow the server's ``x-ratelimit-*`` headers (see ``Feedback.observe``)."""
        self.feedback.observe(key, headers)

    def observe_429(
        self, key: KeyLike, headers: Mapping[str, str], *, admitted: int | None = None
    ) -> float:
        """A 429: slow down what was refused and pause the key for the server's retry-after (or
        reset, or a backoff with jitter); returns the pause. ``admitted``: the refused
        attempt's admission number through the key's gate (see ``KeyState.refused``)."""
        seconds = self.feedback.throttled(key, headers, admitted=admitted)
        self.pause(key, seconds)
        return seconds

    def pause(self, key: KeyLike, seconds: float) -> None:
        """Hold every request of ``key`` for ``seconds`` (after a 429)."""
        key = Key.of(key)
        self.feedback.pause(key, seconds)
        with self._lock:
            self.stats["paused"] += 1
            state = self._state(key)
            if state.waiters:
                self._schedule(key, state, state.waiters[0].future.get_loop())

    def pauses(self) -> dict[Key, float]:
        """Seconds left of each key's pause (keys that are not paused are left out)."""
        return self.feedback.pauses()

    def record(self, key: KeyLike, tokens: int) -> None:
        """One request of ``tokens`` was sent through buckets kept elsewhere (Redis)."""
        self.feedback.record(key, tokens)

    def rates(self, key: KeyLike) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
        """(per minute, burst seconds) of each bucket of ``key`` (see ``Feedback.rates``)."""
        return self.feedback.rates(key)

    def per_minute(self, key: KeyLike) -> tuple[float | None, float | None]:
        """The (requests, tokens) per minute held for ``key`` now (None: not limited)."""
        return self.feedback.per_minute(key)

    def follow(
        self,
        key: KeyLike,
        requests: tuple[float, float] | None,
        tokens: tuple[float, float] | None,
    ) -> None:
        """Take the rates another limiter sharing this limit has learned (see
        ``Feedback.follow``); the queue looks again."""
        key = Key.of(key)
        self.feedback.follow(key, requests, tokens)
        with self._lock:
            self._rearm(key, self._state(key))

    def drain(self, key: KeyLike) -> None:
        """Empty the buckets of ``key`` now (see ``Feedback.drain``)."""
        self.feedback.drain(key)

    def limits(self) -> dict[Key, dict[str, Any]]:
        """What the limiter holds for each key now (see ``Feedback.limits``)."""
        return self.feedback.limits()

    # -- LangChain -----------------------------------------------------------------------------

    def as_langchain(self, key: KeyLike, *, tokens_per_request: int = 0) -> LangChainRateLimiter:
        """A ``BaseRateLimiter`` for ``ChatOpenAI(rate_limiter=...)`` (guards.adapter)."""
        return LangChainRateLimiter(self, Key.of(key), tokens_per_request)
