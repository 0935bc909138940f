"""Client-side rate limiting: requests/min and tokens/min buckets per (api, model).

Why not LangChain's ``InMemoryRateLimiter``: it counts requests only, polls with ``sleep`` and
starts empty. Here both buckets are charged together (a request never holds one without the other),
waiters queue first-in first-out so a large request is not starved by small ones, and nothing polls:
one timer per key wakes the head of the queue when its capacity will be there (as aiolimiter does).

Time is a parameter (``clock``, ``call_later``) so the logic is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import random as _random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from langchain_core.rate_limiters import BaseRateLimiter

from rat_langchain import _portal
from rat_langchain.config import RateLimitingConfig, RetriesConfig
from rat_langchain.errors import RateLimitExceeded, RequestTooLarge
from rat_langchain.guards.headers import announced, parse_duration, retry_after_seconds
from rat_langchain.guards.key import Key, KeyLike
from rat_langchain.guards.learn import Concurrency, Learner

__all__ = [
    "START_RPM",
    "START_TPM",
    "LangChainRateLimiter",
    "Limiter",
    "RateLimit",
    "RateLimitExceeded",
    "RateLimiter",
    "RequestTooLarge",
    "Reservation",
    "TokenBucket",
    "check_size",
]

_EPSILON = 1e-9
_MAX_CONCURRENCY = 1024  # where a learned concurrency limit turns off without max_concurrency
_BACKOFF_S = 0.5  # the first pause after a 429 that says nothing of when to come back


# One default per setting: the config model's (performance.rate_limiting, .retries).
_DEFAULTS = RateLimitingConfig()
_RETRY_DEFAULTS = RetriesConfig()


class _TimerHandle(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], _TimerHandle]


# Where a learned limit starts, until the server's first x-ratelimit-limit-* header.
START_RPM = 500
START_TPM = 200_000


@dataclass(frozen=True)
class RateLimit:
    """Limits of one (api, model). ``None`` means that dimension is not limited.

    ``learn_rpm`` / ``learn_tpm``: the number is only where the limit starts; the server's
    ``x-ratelimit-limit-*`` replaces it, up or down. Otherwise it is a ceiling: the server's
    limit can lower it, never raise it.

    Example: ``RateLimit(rpm=500, tpm=200_000, safety_margin=0.9)``.
    """

    rpm: int | None = None
    tpm: int | None = None
    safety_margin: float = _DEFAULTS.safety_margin
    burst_s: float = _DEFAULTS.burst_s
    learn_rpm: bool = False
    learn_tpm: bool = False

    @classmethod
    def of(
        cls,
        rpm: int | Literal["auto"] | None,
        tpm: int | Literal["auto"] | None,
        safety_margin: float = _DEFAULTS.safety_margin,
        burst_s: float = _DEFAULTS.burst_s,
    ) -> RateLimit:
        """A ``RateLimit`` from configured values, where ``"auto"`` means learned."""
        return cls(
            START_RPM if rpm == "auto" else rpm,
            START_TPM if tpm == "auto" else tpm,
            safety_margin,
            burst_s,
            learn_rpm=rpm == "auto",
            learn_tpm=tpm == "auto",
        )

    def __post_init__(self) -> None:
        if not 0 < self.burst_s <= 60:
            raise ValueError(f"RateLimit.burst_s must be in (0, 60], got {self.burst_s}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"RateLimit.{name}={value!r}: use RateLimit.of for 'auto'")
            if value is not None and value <= 0:
                raise ValueError(
                    f"RateLimit.{name} must be a positive integer or None, got {value}"
                )
        if not 0 < self.safety_margin <= 1:
            raise ValueError(f"RateLimit.safety_margin must be in (0, 1], got {self.safety_margin}")


class TokenBucket:
    """Refills continuously at ``per_minute``, holds ``burst_s`` seconds' worth, starts full.

    A request larger than one burst waits for a full bucket and takes it into debt. The level may
    go below zero (also when a reconciliation charges more than was reserved): the debt is paid
    back by waiting, which is what the server would make us do anyway.

    ``first_hold_s``: after the first take, refill pauses until ``release_hold()`` (the server
    answered once) or for at most this long. Why: the first burst reaches the server late, after
    connections open, and whatever refilled meanwhile would arrive on top of it in one lump; a
    server enforcing short windows answers that lump with 429s.
    """

    def __init__(
        self,
        per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        burst_s: float = _DEFAULTS.burst_s,
        first_hold_s: float = 0.0,
    ) -> None:
        self.per_minute = float(per_minute)
        self.burst_s = burst_s
        self.capacity = self.per_minute * burst_s / 60.0
        self._clock = clock
        self._level = self.capacity
        self._stamp = clock()
        self._first_hold_s = first_hold_s
        self._hold_until: float | None = None  # set by the first take, cleared by release_hold

    @property
    def rate(self) -> float:
        return self.per_minute / 60.0

    def level(self) -> float:
        now = self._clock()
        start = self._stamp
        if self._hold_until is not None:
            start = max(start, min(now, self._hold_until))
        self._level = min(self.capacity, self._level + max(0.0, now - start) * self.rate)
        self._stamp = now
        return self._level

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 if it is now)."""
        missing = min(amount, self.capacity) - self.level()
        if missing <= _EPSILON:  # float dust must not arm a timer for an instant from now
            return 0.0
        held = 0.0 if self._hold_until is None else max(0.0, self._hold_until - self._clock())
        return held + missing / self.rate

    def take(self, amount: float) -> None:
        self.level()
        self.take_refilled(amount)

    def fits(self, amount: float) -> bool:
        """Whether ``amount`` is available now (refills the level as a side effect)."""
        return min(amount, self.capacity) - self.level() <= _EPSILON

    def take_refilled(self, amount: float) -> None:
        """``take`` right after ``level()``/``fits()``: the admission fast path refills once."""
        if self._first_hold_s > 0 and self._hold_until is None:
            self._hold_until = self._clock() + self._first_hold_s
            self._first_hold_s = 0.0  # only the first burst is held
        self._level -= amount

    def release_hold(self) -> None:
        """The server has answered: refill from now on."""
        if self._hold_until is not None:
            self.level()
            self._hold_until = None

    @property
    def last_level(self) -> float:
        """The level as of the last refill (no refill: for the hot path, right after a take)."""
        return self._level

    def give(self, amount: float) -> None:
        self._level = min(self.capacity, self.level() + amount)

    def cap(self, level: float) -> None:
        """Lower the level to what the server says is left (never raise it)."""
        self._level = min(self.level(), level)

    def shrink(self, per_minute: float) -> None:
        """Adopt a lower limit (the server's is below the configured one)."""
        if per_minute < self.per_minute:
            self.adopt(per_minute)

    def adopt(self, per_minute: float) -> None:
        """Adopt the server's limit, higher or lower (a learned limit). Raising it adds no
        burst: the level grows at the new rate from where it is."""
        if per_minute != self.per_minute:
            self.level()
            self.per_minute = float(per_minute)
            self.capacity = self.per_minute * self.burst_s / 60.0
            self._level = min(self._level, self.capacity)

    def widen(self, burst_s: float) -> None:
        """Hold ``burst_s`` seconds' worth from now on (wider or narrower). Widening adds
        nothing at once: the level grows into the room at the bucket's rate."""
        self.level()
        self.burst_s = burst_s
        self.capacity = self.per_minute * burst_s / 60.0
        self._level = min(self._level, self.capacity)


@dataclass
class _Waiter:
    future: asyncio.Future[None]
    tokens: int


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


class _KeyState:
    """Buckets, pause and FIFO waiters of one key. Guarded by the limiter's lock."""

    def __init__(
        self,
        limit: RateLimit,
        clock: Callable[[], float],
        first_hold_s: float = 0.0,
        *,
        borrow: bool = False,
        max_concurrency: int | None = None,
    ) -> None:
        margin = limit.safety_margin
        self.limit = limit
        self.clock = clock
        burst = limit.burst_s
        hold = min(burst, first_hold_s)
        self.requests = (
            TokenBucket(limit.rpm * margin, clock, burst_s=burst, first_hold_s=hold)
            if limit.rpm
            else None
        )
        self.tokens = (
            TokenBucket(limit.tpm * margin, clock, burst_s=burst, first_hold_s=hold)
            if limit.tpm
            else None
        )
        # a learned token limit is an estimate: a request above it waits for a full bucket and
        # borrows, rather than being refused before the server has said what its limit is
        self.borrow = borrow or limit.learn_tpm
        # how each dimension left on "auto" learns its rate and burst (see guards.learn)
        self.learners: dict[str, Learner] = {}
        if limit.learn_rpm and self.requests is not None:
            self.learners["requests"] = Learner(clock, floor=1.0, burst_s=burst)
        if limit.learn_tpm and self.tokens is not None:
            self.learners["tokens"] = Learner(clock, floor=1000.0, burst_s=burst)
        self.throttles = 0  # 429s in a row without a retry-after: the backoff's exponent
        # attempts in flight, under a limit learned from 429s where the server announces none
        self.concurrency = (
            Concurrency(max_concurrency or _MAX_CONCURRENCY) if limit.learn_rpm else None
        )
        self.in_flight = 0
        self.gate_waiters: deque[asyncio.Future[None]] = deque()
        self.paused_until = 0.0
        self.acknowledged = False
        self.waiters: deque[_Waiter] = deque()
        self.timer: _TimerHandle | None = None

    def check_size(self, tokens: int, key: Key) -> None:
        if not self.borrow:
            check_size(key, tokens, self.tokens.per_minute if self.tokens is not None else None)

    def wait_time(self, tokens: int) -> float:
        wait = max(0.0, self.paused_until - self.clock())
        if self.requests is not None:
            wait = max(wait, self.requests.wait_for(1))
        if self.tokens is not None:
            wait = max(wait, self.tokens.wait_for(tokens))
        return wait

    def queue_wait(self, tokens: int) -> float:
        """Expected wait of a caller joining the back of the queue now (an estimate: waiters
        that were cancelled but not yet removed still count)."""
        wait = max(0.0, self.paused_until - self.clock())
        ahead = [w for w in self.waiters if not w.future.done()]
        if self.requests is not None:
            missing = len(ahead) + 1 - self.requests.level()
            wait = max(wait, missing / self.requests.rate)
        if self.tokens is not None:
            missing = sum(w.tokens for w in ahead) + tokens - self.tokens.level()
            wait = max(wait, missing / self.tokens.rate)
        return wait

    def take(self, tokens: int) -> None:
        if self.requests is not None:
            self.requests.take(1)
        if self.tokens is not None:
            self.tokens.take(tokens)
        self._sent(tokens)

    def _sent(self, tokens: int) -> None:
        """Tell the learners what was taken (their measured send rate)."""
        if not self.learners:
            return
        for name, bucket, amount in (
            ("requests", self.requests, 1),
            ("tokens", self.tokens, tokens),
        ):
            learner = self.learners.get(name)
            if learner is not None and bucket is not None:
                learner.sent(amount, bucket.capacity, bucket.last_level)

    def bucket(self, name: str) -> TokenBucket | None:
        return self.requests if name == "requests" else self.tokens

    def drop(self, name: str) -> None:
        """The dimension is not limited by the server (see ``RateLimiter.observe``)."""
        setattr(self, name, None)
        self.learners.pop(name, None)

    def try_take(self, tokens: int) -> bool:
        """Take one request and ``tokens`` if both fit now: ``wait_time() <= 0`` then
        ``take()``, refilling each bucket once instead of twice (the path almost every call
        takes)."""
        if self.paused_until > self.clock():
            return False
        requests, bucket = self.requests, self.tokens
        if requests is not None and not requests.fits(1):
            return False
        if bucket is not None and not bucket.fits(tokens):
            return False
        if requests is not None:
            requests.take_refilled(1)
        if bucket is not None:
            bucket.take_refilled(tokens)
        self._sent(tokens)
        return True


def check_size(key: Key, tokens: int, per_minute: float | None) -> None:
    """``RequestTooLarge`` if ``tokens`` can never fit a token limit of ``per_minute`` (None:
    no token limit): waiting for it would never end."""
    if per_minute is not None and tokens > per_minute:
        raise RequestTooLarge(
            f"a request of {tokens} tokens can never fit the {key} tokens-per-minute limit "
            f"({per_minute:.0f} = tpm_limit x safety_margin); raise "
            "performance.rate_limiting.tpm_limit or split the request"
        )


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

    def gate(self, key: KeyLike) -> AbstractAsyncContextManager[None] | None: ...

    def acknowledge(self, key: KeyLike) -> None: ...

    def observe(self, key: KeyLike, headers: Mapping[str, str]) -> None: ...

    def observe_429(self, key: KeyLike, headers: Mapping[str, str]) -> float: ...

    def pause(self, key: KeyLike, seconds: float) -> None: ...

    def learned(self) -> dict[Key, dict[str, Any]]: ...

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
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater | None = None,
        random: Callable[[], float] = _random.random,
    ) -> None:
        """``max_pause_s``: the longest a server's answer (``retry-after``, a reset header) may
        hold a key; server headers are untrusted and a Retry-After of days must not stall every
        later call (``retries.max_server_wait_s``).

        ``borrow=True``: a request larger than the TPM bucket waits for a full bucket and goes
        into debt instead of raising ``RequestTooLarge`` (a share of a larger budget that the
        caller has already checked the request against)."""
        if max_queue is not None and max_queue < 0:
            raise ValueError(f"max_queue must be >= 0 or None, got {max_queue}")
        if max_queue_wait_s is not None and max_queue_wait_s < 0:
            raise ValueError(f"max_queue_wait_s must be >= 0 or None, got {max_queue_wait_s}")
        self.default = RateLimit.of(rpm, tpm, safety_margin, burst_s)
        self.max_queue = max_queue
        self.max_queue_wait_s = max_queue_wait_s
        self.per_model = dict(per_model or {})
        self.max_concurrency = max_concurrency
        self.first_hold_s = first_hold_s
        self.borrow = borrow
        self.max_pause_s = max_pause_s
        self._clock = clock
        self._call_later = call_later
        self._random = random  # the jitter of backoffs (a parameter: tests fix it)
        self._states: dict[Key, _KeyState] = {}
        self._lock = threading.Lock()
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

    # -- state ---------------------------------------------------------------------------------

    def limit_for(self, key: KeyLike) -> RateLimit:
        return self.per_model.get(Key.of(key).model, self.default)

    def _state(self, key: Key) -> _KeyState:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _KeyState(
                self.limit_for(key),
                self._clock,
                self.first_hold_s,
                borrow=self.borrow,
                max_concurrency=self.max_concurrency,
            )
        return state

    def _schedule(self, key: Key, state: _KeyState, loop: asyncio.AbstractEventLoop) -> None:
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
            state = self._states.get(key)
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
            waiter = _Waiter(loop.create_future(), tokens)
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

    def _backpressure(self, state: _KeyState, key: Key, tokens: int) -> None:
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
            raise RateLimitExceeded(key, queued, expected, reason)

    def _check(self, state: _KeyState, key: Key, tokens: int) -> None:
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        try:
            state.check_size(tokens, key)
        except RequestTooLarge:
            self.stats["too_large"] += 1
            raise

    @staticmethod
    def _give_back(state: _KeyState, tokens: int, *, requests: int = 0) -> None:
        if state.tokens is not None and tokens:
            if tokens > 0:
                state.tokens.give(tokens)
            else:
                state.tokens.take(-tokens)
        if state.requests is not None and requests:
            state.requests.give(requests)

    def _settle(self, key: Key, tokens: int, requests: int) -> None:
        """A reservation settles: ``tokens`` (negative: an extra charge) and ``requests``
        come back to the buckets of ``key``."""
        with self._lock:
            state = self._states.get(key)
            if state is None:
                return
            self._give_back(state, tokens, requests=requests)
            self._rearm(key, state)

    def _rearm(self, key: Key, state: _KeyState) -> None:
        """Re-evaluate the queue after capacity changed. Lock held."""
        if state.waiters:
            loop = state.waiters[0].future.get_loop()
            if loop.is_running() and not loop.is_closed():
                # call_soon_threadsafe: reconcile may run on another thread (sync callers)
                loop.call_soon_threadsafe(self._wake, key, loop)

    def gate(self, key: KeyLike) -> _Gate | None:
        """Bounds attempts of ``key`` in flight where the server announces no limits and has
        answered 429 (see ``guards.learn.Concurrency``); None for a key that never learns it."""
        key = Key.of(key)
        with self._lock:
            state = self._state(key)
        return None if state.concurrency is None else _Gate(self, state)

    def _admit(self, state: _KeyState) -> None:
        """Let queued attempts in while the concurrency limit allows. Lock held."""
        assert state.concurrency is not None
        while state.gate_waiters and state.concurrency.admits(state.in_flight):
            waiter = state.gate_waiters.popleft()
            if waiter.done():
                continue
            state.in_flight += 1
            self._resolve(state, waiter)

    def _resolve(self, state: _KeyState, waiter: asyncio.Future[None]) -> None:
        """Wake ``waiter`` on its own loop (a limiter serves every loop of the process)."""
        loop = waiter.get_loop()
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here:
            waiter.set_result(None)
            return

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)
                return
            with self._lock:  # cancelled on the way: its slot goes to the next
                state.in_flight -= 1
                self._admit(state)

        if not loop.is_closed():
            loop.call_soon_threadsafe(wake)

    def semaphore(self) -> asyncio.Semaphore | None:
        """Bounds calls in flight (``max_parallel_llm_calls``), independent of the rates."""
        if self.max_concurrency is None:
            return None
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(loop)
        if sem is None:
            sem = self._semaphores[loop] = asyncio.Semaphore(self.max_concurrency)
        return sem

    # -- feedback from the server --------------------------------------------------------------

    def acknowledge(self, key: KeyLike, *, busy: bool | None = None) -> None:
        """An attempt for ``key`` completed: end the first burst's hold (see ``TokenBucket``),
        and let a learned rate the server announces nothing of grow (see ``guards.learn``;
        ``busy``: whether the rate binds, where the caller knows better than the send rate
        this limiter measured)."""
        key = Key.of(key)
        known = self._states.get(key)
        if known is not None and known.acknowledged and not known.learners:
            return  # every call after the first: no lock (the flag only goes False -> True)
        with self._lock:
            state = self._states.get(key)
            if state is None:
                return
            if not state.acknowledged:
                state.acknowledged = True
                for bucket in (state.requests, state.tokens):
                    if bucket is not None:
                        bucket.release_hold()
            grew = False
            for name, learner in state.learners.items():
                bucket = state.bucket(name)
                if bucket is None:
                    continue
                rate = learner.answered(bucket.per_minute, bucket.capacity, busy=busy)
                if rate is not None:
                    bucket.adopt(rate)
                    grew = True
            if grew or not state.learners:
                self._rearm(key, state)

    def observe(self, key: KeyLike, headers: Mapping[str, str]) -> None:
        """Follow the server's ``x-ratelimit-*`` headers (a project-level limit too, where the
        server sends one: the tighter binds): adopt a learned limit it announces, never go
        above a configured one, never hold more than it says is left, and widen the burst
        when it shows it allows more."""
        self._follow(Key.of(key), headers, answered=True)

    def _follow(self, key: Key, headers: Mapping[str, str], *, answered: bool) -> None:
        """``observe`` for a success (``answered``) or a 429."""
        said = {name: announced(headers, name) for name in ("requests", "tokens")}
        # A server that announces limits announces every one it enforces (OpenAI sends both):
        # a learned dimension it says nothing of, neither limit nor remaining, is not limited.
        announcing = any(told.limit is not None for told in said.values())
        with self._lock:
            state = self._state(key)
            if answered:
                state.throttles = 0  # the backoff of 429s without a retry-after starts over
            margin = state.limit.safety_margin
            learns = {"requests": state.limit.learn_rpm, "tokens": state.limit.learn_tpm}
            if announcing:
                for name, told in said.items():
                    bucket = state.bucket(name)
                    unsaid = told.limit is None and told.remaining is None
                    if learns[name] and bucket is not None and unsaid:
                        state.drop(name)
            for name in ("requests", "tokens"):
                bucket = state.bucket(name)
                if bucket is None:
                    continue
                told = said[name]  # garbage and negative values left out
                learner = state.learners.get(name)
                if told.limit is not None and told.limit > 0:
                    if learns[name]:
                        bucket.adopt(told.limit * margin)  # up as well as down
                    else:
                        bucket.shrink(told.limit * margin)  # a ceiling the user set
                    if learner is not None:
                        learner.announced()
                if learner is not None:
                    learner.heard(told.remaining)
                    wider = learner.widen(told.remaining, bucket.capacity)
                    if wider is not None:
                        bucket.widen(wider)
                if told.remaining is not None:
                    # the server's count includes requests in flight that we already charged;
                    # tightening to it is conservative, never looser than our own view
                    bucket.cap(told.remaining)

    # -- learning for a limiter that keeps its buckets elsewhere (Redis) ------------------------

    def record(self, key: KeyLike, tokens: int) -> None:
        """``tokens`` and one request were sent for ``key`` through buckets kept elsewhere:
        measure the send rate without taking from these buckets."""
        key = Key.of(key)
        with self._lock:
            self._state(key)._sent(tokens)

    def rates(self, key: KeyLike) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
        """(per minute, burst seconds) of the requests and tokens buckets of ``key`` as learned
        so far (after the safety margin); None for a dimension that is not limited."""
        key = Key.of(key)
        with self._lock:
            state = self._state(key)
            return tuple(  # type: ignore[return-value]
                None if b is None else (b.per_minute, b.burst_s)
                for b in (state.requests, state.tokens)
            )

    def per_minute(self, key: KeyLike) -> tuple[float | None, float | None]:
        """The (requests, tokens) per minute held for ``key`` now (None: not limited)."""
        requests, tokens = self.rates(key)
        return (
            None if requests is None else requests[0],
            None if tokens is None else tokens[0],
        )

    def follow(
        self,
        key: KeyLike,
        requests: tuple[float, float] | None,
        tokens: tuple[float, float] | None,
    ) -> None:
        """Take the rates another limiter sharing this limit has learned (see ``rates``): a
        dimension it found unlimited is dropped, a lower rate is a 429 it saw."""
        key = Key.of(key)
        with self._lock:
            state = self._state(key)
            for name, shared in (("requests", requests), ("tokens", tokens)):
                bucket, learner = state.bucket(name), state.learners.get(name)
                if bucket is None or learner is None:
                    continue  # configured (not learned), or already unlimited
                if shared is None:
                    state.drop(name)
                    continue
                per_minute, burst_s = shared
                learner.follow(per_minute, bucket.per_minute)
                bucket.adopt(per_minute)
                if burst_s != bucket.burst_s:
                    learner.burst_s = burst_s
                    bucket.widen(burst_s)
            self._rearm(key, state)

    def drain(self, key: KeyLike) -> None:
        """Empty the buckets of ``key`` now: a stand-in joining a window that another limiter
        has been spending must not add a fresh burst on top of it."""
        key = Key.of(key)
        with self._lock:
            state = self._state(key)
            for bucket in (state.requests, state.tokens):
                if bucket is not None:
                    bucket.take(bucket.level())

    def pauses(self) -> dict[Key, float]:
        """Seconds left of each key's pause (keys that are not paused are left out)."""
        now = self._clock()
        with self._lock:
            return {
                key: state.paused_until - now
                for key, state in self._states.items()
                if state.paused_until > now
            }

    def pause(self, key: KeyLike, seconds: float) -> None:
        """Hold every request of ``key`` for ``seconds`` (after a 429)."""
        key = Key.of(key)
        seconds = min(max(0.0, seconds), self.max_pause_s)  # headers are untrusted
        with self._lock:
            state = self._state(key)
            state.paused_until = max(state.paused_until, self._clock() + seconds)
            self.stats["paused"] += 1
            if state.waiters:
                loop = state.waiters[0].future.get_loop()
                self._schedule(key, state, loop)

    def observe_429(self, key: KeyLike, headers: Mapping[str, str]) -> float:
        """Pause the key for the server's retry-after (or reset; without either, an exponential
        backoff with jitter), slow down the dimension that was refused, and return the pause."""
        key = Key.of(key)
        seconds = retry_after_seconds(headers)
        if seconds is None:
            lowered = {k.lower(): v for k, v in headers.items()}
            resets = [
                parse_duration(lowered.get(f"x-ratelimit-reset-{name}", ""))
                for name in ("requests", "tokens")
            ]
            seconds = min((r for r in resets if r is not None), default=None)
        with self._lock:
            state = self._state(key)
            if seconds is None:  # the server said nothing of when: back off, with jitter
                left = state.paused_until - self._clock()
                if left > 0:  # one burst's 429s, sent before the pause: one step, not many
                    seconds = left
                else:
                    state.throttles += 1
                    ceiling = _BACKOFF_S * 2.0 ** min(state.throttles - 1, 30)
                    seconds = min(ceiling, self.max_pause_s) * (0.5 + 0.5 * self._random())
            self._slow_down(state, headers)
        seconds = min(seconds, self.max_pause_s)  # untrusted: never longer than this
        self.pause(key, seconds)
        self._follow(key, headers, answered=False)
        return seconds

    def _slow_down(self, state: _KeyState, headers: Mapping[str, str]) -> None:
        """A 429: the learned rate of the refused dimension drops (see ``guards.learn``); a
        dimension refused below its announced rate has a shorter window: its burst narrows.
        Lock held."""
        refused = _refused(state, headers)
        if refused is None:
            return
        silent = not any(name.lower().startswith("x-ratelimit-") for name in headers)
        bucket, learner = state.bucket(refused), state.learners.get(refused)
        if bucket is None or learner is None:
            return
        if learner.phase == "announced":
            announced_rate = bucket.per_minute / state.limit.safety_margin
            narrower = learner.window_shorter(announced_rate, state.limit.burst_s)
            if narrower is not None:
                bucket.widen(narrower)
            return
        binding = learner.binding(bucket.per_minute)
        if state.concurrency is not None and refused == "requests" and silent:
            # a server that says nothing may count requests in flight (a gateway's or a model
            # server's queue) rather than a rate: both limits step down, and each grows back
            # only while it is used
            state.concurrency.throttled(state.in_flight, self._clock())
        if binding:  # else the rate was not what the key ran into: leave it
            rate = learner.throttled(bucket.per_minute)
            if rate is not None:
                bucket.adopt(rate)

    def learned(self) -> dict[Key, dict[str, Any]]:
        """What the limiter holds for each key now: per dimension the rate per minute it uses
        (after the safety margin), the burst in seconds, where the rate comes from
        (``configured``, ``start``, ``announced``, ``slow_start``, ``cubic``) and the send rate
        measured per minute; ``None`` for a dimension that is not limited."""
        out: dict[Key, dict[str, Any]] = {}
        with self._lock:
            for key, state in self._states.items():
                row: dict[str, Any] = {}
                for name in ("requests", "tokens"):
                    bucket, learner = state.bucket(name), state.learners.get(name)
                    row[name] = (
                        None
                        if bucket is None
                        else {
                            "per_minute": bucket.per_minute,
                            "burst_s": bucket.burst_s,
                            "source": "configured" if learner is None else learner.phase,
                            "sending_per_minute": None if learner is None else learner.measured,
                        }
                    )
                row["paused_s"] = max(0.0, state.paused_until - self._clock())
                row["in_flight"] = state.in_flight if state.concurrency is not None else None
                row["concurrency_limit"] = (
                    None if state.concurrency is None else state.concurrency.limit
                )
                out[key] = row
        return out

    # -- LangChain -----------------------------------------------------------------------------

    def as_langchain(self, key: KeyLike, *, tokens_per_request: int = 0) -> LangChainRateLimiter:
        """A ``BaseRateLimiter`` for ``ChatOpenAI(rate_limiter=...)``.

        LangChain's interface carries no weight, so each call is charged one request and
        ``tokens_per_request`` estimated tokens; the resilient wrapper charges real counts.
        """
        return LangChainRateLimiter(self, Key.of(key), tokens_per_request)


def _refused(state: _KeyState, headers: Mapping[str, str]) -> str | None:
    """Which dimension a 429 was for: the one the server says has least left (relative to one
    burst); without such headers, the one being used nearest its rate."""
    shares: dict[str, float] = {}
    used: dict[str, float] = {}
    for name in ("requests", "tokens"):
        bucket = state.bucket(name)
        if bucket is None:
            continue
        remaining = announced(headers, name).remaining
        if remaining is not None:
            shares[name] = remaining / max(bucket.capacity, _EPSILON)
        learner = state.learners.get(name)
        if learner is not None:
            used[name] = learner.measured / max(bucket.per_minute, _EPSILON)
    if shares:
        return min(shares, key=lambda n: shares[n])
    return max(used, key=lambda n: used[n]) if used else None


class _Gate:
    """``async with``: one attempt of a key in flight, admitted first in, first out under the
    key's learned concurrency limit (``RateLimiter.gate``)."""

    __slots__ = ("_limiter", "_state")

    def __init__(self, limiter: RateLimiter, state: _KeyState) -> None:
        self._limiter = limiter
        self._state = state

    async def __aenter__(self) -> None:
        limiter, state = self._limiter, self._state
        assert state.concurrency is not None
        with limiter._lock:
            if not state.gate_waiters and state.concurrency.admits(state.in_flight):
                state.in_flight += 1
                return
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            state.gate_waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            with limiter._lock:
                if waiter.done() and not waiter.cancelled():  # admitted, then cancelled
                    state.in_flight -= 1
                    limiter._admit(state)
                elif waiter in state.gate_waiters:
                    state.gate_waiters.remove(waiter)
            raise

    async def __aexit__(self, *_exc: object) -> None:
        limiter, state = self._limiter, self._state
        assert state.concurrency is not None
        with limiter._lock:
            state.concurrency.completed(state.in_flight)
            state.in_flight -= 1
            limiter._admit(state)


class LangChainRateLimiter(BaseRateLimiter):
    """Adapter from :class:`RateLimiter` to ``langchain_core.rate_limiters.BaseRateLimiter``."""

    def __init__(self, limiter: RateLimiter, key: Key, tokens_per_request: int = 0) -> None:
        self.limiter = limiter
        self.key = key
        self.tokens = tokens_per_request

    def acquire(self, *, blocking: bool = True) -> bool:
        """Sync callers wait on the sync entry points' loop, first in, first out with the
        async ones (as langchain-core's limiter shares one ``_consume`` between both)."""
        if not blocking:
            return self.limiter.try_acquire(self.key, self.tokens) is not None
        _portal.run(self.limiter.acquire(self.key, self.tokens))
        return True

    async def aacquire(self, *, blocking: bool = True) -> bool:
        if not blocking:
            return self.limiter.try_acquire(self.key, self.tokens) is not None
        await self.limiter.acquire(self.key, self.tokens)
        return True

    def __repr__(self) -> str:
        return f"LangChainRateLimiter(key={self.key!r}, tokens_per_request={self.tokens})"
