"""One quota across processes, through Redis.

Why a script of our own rather than pyrate-limiter's ``RedisStateStore``: a request must take
from the RPM and the TPM bucket together or from neither, and must be able to give unused tokens
back after the call (reconciliation with ``usage``); pyrate-limiter's buckets are separate rate
items with no refund. ``take.lua`` is ~30 lines: both buckets are refilled from the Redis
server's clock (``TIME``, not each worker's), checked and charged atomically; when they do not
fit it answers how long to wait, and the caller sleeps exactly that.

Within a process callers still queue first in, first out (an ``asyncio.Lock`` per key, which is
fair), so only the head of each process's queue talks to Redis. The limiter *composes* a local
:class:`~rat_langchain.guards.limiter.RateLimiter` (it does not extend it): that one stands in
while Redis cannot be reached, with 1/N of the limit for N workers seen alive (heartbeats), and
starts empty, since the shared bucket was spending this window until then. Redis is tried again
after ``retry_s``; ``redis_failure: fail_closed`` raises :class:`RateLimiterUnavailable`
instead. Every Redis call has a short socket timeout, so no call hangs on a dead server.

Size: ~520 lines: the shared take with its FIFO, the corrections, the learned rates' exchange
(learn.lua) and the stand-in's life across outages are one protocol with Redis, each part
reading the others' state (the link's outage flag, the worker count, the epoch).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

from rat_langchain import _portal
from rat_langchain.config import RateLimitingConfig
from rat_langchain.errors import BackpressureError, RateLimiterUnavailable, RequestTooLarge
from rat_langchain.guards._keytable import KeyTable
from rat_langchain.guards.gate import gate_for
from rat_langchain.guards.headers import announced
from rat_langchain.guards.key import Key, KeyLike
from rat_langchain.guards.limiter import (
    RateLimit,
    RateLimiter,
    Reservation,
    check_size,
    limiter_stats,
)
from rat_langchain.guards.redis._link import Link, lua, safe_url

__all__ = ["RedisRateLimiter"]

_log = logging.getLogger("rat_langchain.guards.redis")
_DEFAULTS = RateLimitingConfig()  # one default per setting: the config model's


_MAX_WORKERS = 1024  # a share of the limit is never below 1/this while Redis is down


@dataclass(eq=False)
class _View:
    """This process's view of one key's shared state: the rates last agreed with Redis
    (``learn.lua``'s epoch), when a take last had to wait, and the takes queued behind the
    one talking to Redis (a lock per event loop)."""

    agreed: tuple[int, Any] = (0, None)
    waited_at: float = -math.inf
    spent: bool = False  # a take had to wait since the last grant: the shared burst was spent
    queued: int = 0
    locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self.locks.get(loop)
        if lock is None:
            lock = self.locks[loop] = asyncio.Lock()
        return lock

    def busy(self) -> bool:
        """Takes wait or talk to Redis: the entry is in use and is kept."""
        return self.queued > 0 or any(lock.locked() for lock in self.locks.values())


class RedisRateLimiter:
    """RPM + TPM buckets in Redis, shared by every process using it.

    Example::

        limiter = RedisRateLimiter(1200, 400_000, url="redis://127.0.0.1:6379/0")
        reservation = await limiter.acquire(("https://api.openai.com/v1", "gpt-4o-mini"), 800)

    Same interface and semantics as the local limiter (reservations, reconcile, headers, 429
    pauses, backpressure); while Redis is down a local limiter stands in (``degraded``).
    """

    def __init__(
        self,
        rpm: int | Literal["auto"] | None = _DEFAULTS.rpm_limit,
        tpm: int | Literal["auto"] | None = _DEFAULTS.tpm_limit,
        *,
        url: str = _DEFAULTS.redis_url,
        prefix: str = "rat",
        fail_closed: bool = False,
        timeout_s: float = 1.0,
        retry_s: float = 1.0,
        heartbeat_s: float = 1.0,
        **local: Any,
    ) -> None:
        """``local``: the keyword arguments of :class:`RateLimiter` (``safety_margin``,
        ``burst_s``, ``per_model``, ``max_queue``, ``clock``...), which apply to the shared
        buckets and to the local stand-in alike."""
        # the first burst's hold is a per-process notion; the shared bucket has none. The
        # processes share a rate, so one exists from the start (no key left open until refused)
        self._local_args = {
            "rpm": rpm,
            "tpm": tpm,
            **local,
            "first_hold_s": 0.0,
            "open_until_refused": False,
        }
        # The configured limits, and the stand-in used while Redis is down.
        self.local = RateLimiter(**self._local_args)
        # The feedback policy alone (headers, 429s, learning) for the shared buckets: what it
        # learns goes to Redis (learn.lua), where every process's take reads it. Apart from the
        # stand-in, which is replaced at every outage.
        self.learning = self.local.feedback.fresh()
        # this process's view of each key it uses, bounded as the local limiter's states are
        self._views: KeyTable[_View] = KeyTable(
            lambda _key: _View(),
            busy=_View.busy,
            max_keys=self.learning.max_keys,
            idle_s=self.learning.idle_s,
            clock=time.monotonic,
            what="rate limiter (Redis)",
        )
        self._default = self.local.default  # the whole budget, whatever share the stand-in has
        self._per_model = dict(self.local.per_model)
        self.prefix = prefix
        self.fail_closed = fail_closed
        self._link = Link(url, timeout_s=timeout_s, retry_s=retry_s, name="rate limiter")
        self.stats = limiter_stats(redis_calls=0, redis_errors=0, degraded_acquires=0)
        # Workers alive on this Redis (heartbeats at most every heartbeat_s): while Redis is
        # down, each process's local buckets get 1/workers of the limit, so together they
        # still stay near one budget instead of each spending all of it.
        self.heartbeat_s = heartbeat_s
        self.workers = 1
        self._worker_id = uuid.uuid4().hex
        self._beat_at = -float("inf")
        self._share = 1
        self._link.on_change = self._link_changed

    @classmethod
    def from_config(cls, config: RateLimitingConfig, **kwargs: Any) -> RedisRateLimiter:
        kwargs.setdefault("url", config.redis_url)
        kwargs.setdefault("fail_closed", config.redis_failure == "fail_closed")
        return cls(**RateLimiter.config_args(config), **kwargs)

    def __repr__(self) -> str:
        default = self._default
        return (
            f"RedisRateLimiter({safe_url(self._link.url)!r}, rpm={default.rpm}, "
            f"tpm={default.tpm}, degraded={self.degraded})"
        )

    # -- what the guards read ------------------------------------------------------------------

    @property
    def default(self) -> RateLimit:
        return self._default

    @property
    def max_queue(self) -> int | None:
        return self.local.max_queue

    @property
    def max_queue_wait_s(self) -> float | None:
        return self.local.max_queue_wait_s

    def limit_for(self, key: KeyLike) -> RateLimit:
        """The configured limit of ``key``: what the shared buckets hold."""
        return self._per_model.get(Key.of(key).model, self._default)

    def semaphore(self) -> asyncio.Semaphore | None:
        return self.local.semaphore()

    def gate(self, key: KeyLike) -> AbstractAsyncContextManager[int] | None:
        """This process's attempts in flight for ``key`` (a concurrency limit is per process)."""
        return gate_for(self.learning, key)

    def per_minute(self, key: KeyLike) -> tuple[float | None, float | None]:
        """The whole (requests, tokens) per minute the shared buckets hold for ``key``."""
        return self.learning.per_minute(key)

    def limits(self) -> dict[Key, dict[str, Any]]:
        """What this process has learned for the shared buckets (see ``RateLimiter.limits``)."""
        return self.learning.limits()

    def acknowledge(self, key: KeyLike) -> None:
        key = Key.of(key)
        self.local.acknowledge(key)
        # the shared bucket binds when takes wait, whatever this process's share of the sends
        view = self._views.peek(key)
        waited_at = -math.inf if view is None else view.waited_at
        busy = time.monotonic() - waited_at < _BUSY_WINDOW_S
        self.learning.acknowledge(key, busy=busy)
        self._share_learned(key)

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and the local buckets are used."""
        return self._link.degraded

    @property
    def outages(self) -> int:
        return self._link.outages

    @property
    def degraded_share(self) -> int:
        """While degraded, the local buckets hold 1/this of the limit (1 when not degraded)."""
        return self._share

    # -- the local stand-in --------------------------------------------------------------------

    def _link_changed(self, down: bool) -> None:
        """Redis went away or came back: a fresh local stand-in for the new share. Empty while
        degraded: the shared bucket was spending this window until now, and a fresh burst from
        every worker at once is what the server would answer with 429s."""
        self._share = max(1, self.workers) if down else 1
        args = dict(self._local_args)
        if self._share > 1:
            share = self._share
            # a share of the whole: each worker's share is of the limit the shared buckets
            # hold (the learned rates, shared through learn.lua, are Redis's too, and gone
            # with it)
            args["rpm"] = _divided(self._default.rpm, share)
            args["tpm"] = _divided(self._default.tpm, share)
            args["per_model"] = {
                model: RateLimit(
                    _divided(limit.rpm, share),
                    _divided(limit.tpm, share),
                    limit.safety_margin,
                    limit.burst_s,
                )
                for model, limit in (args.get("per_model") or {}).items()
            }
            # too large for a share, maybe, but not for the whole budget (checked first): the
            # local bucket lends it (waits for a full bucket, goes into debt)
            args["borrow"] = True
        stand_in = RateLimiter(**args)
        if down:
            for key, _view in self._views.items():
                stand_in.drain(key)
        for key, seconds in self.local.pauses().items():  # the server's pauses still hold
            stand_in.pause(key, seconds)
        self.local = stand_in
        if down and self._share > 1:
            _log.warning(
                "rate limiter: each of the %d workers seen on Redis takes 1/%d of the limit "
                "until it is back",
                self._share,
                self._share,
            )

    def _check(self, key: Key, tokens: int) -> None:
        """The checks of the whole budget, before Redis or the stand-in is asked."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        self._views.obtain(key)  # a key this process uses: its window is in use
        limit = self.limit_for(key)
        if limit.learn_tpm or limit.tpm is None:
            return  # a learned limit is an estimate: a large request borrows, as locally
        try:
            check_size(key, tokens, limit.tpm * limit.safety_margin)
        except RequestTooLarge:
            self.stats["too_large"] += 1
            raise

    def _degraded_grant(self, reservation: Reservation | None) -> Reservation | None:
        if reservation is not None:
            self.stats["degraded_acquires"] += 1
            self.stats["acquired"] += 1
        return reservation

    # -- heartbeats ----------------------------------------------------------------------------

    def _heartbeat_due(self) -> bool:
        return time.monotonic() - self._beat_at >= self.heartbeat_s

    def _heartbeat_args(self) -> tuple[str, str, int]:
        self._beat_at = time.monotonic()
        ttl_ms = int(max(10.0, 5 * self.heartbeat_s) * 1000)
        return f"{self.prefix}:workers", self._worker_id, ttl_ms

    async def _heartbeat(self) -> None:
        if not self._heartbeat_due():
            return
        key, worker, ttl_ms = self._heartbeat_args()
        try:
            count = await self._link.client().eval(lua("heartbeat"), 1, key, worker, ttl_ms)
        except self._link.errors:
            return  # the next take finds out whether Redis is down
        self.workers = max(1, min(int(count), _MAX_WORKERS))

    # -- the script's arguments ----------------------------------------------------------------

    def _keys(self, key: Key) -> list[str]:
        base = f"{self.prefix}:rl:{key.id}"  # unambiguous: endpoint, model, tenant
        return [f"{base}:rpm", f"{base}:tpm", f"{base}:pause", f"{base}:learned"]

    def _args(self, key: Key, tokens: int, mode: str, requests: int = 0) -> list[Any]:
        # the shared buckets hold the whole limit, as this process has learned it (the rates
        # the processes learned together, in Redis, take precedence in the script)
        requests_rate, tokens_rate = self.learning.rates(key)
        r_rate, r_burst = (0.0, 1.0) if requests_rate is None else requests_rate
        t_rate, t_burst = (0.0, 1.0) if tokens_rate is None else tokens_rate
        ttl = int(max(r_burst, t_burst) * 1000 * 2) + 1000
        floors = self.learning.floors()  # what a rate read from Redis may not go below
        limit = self.learning.limit_for(key)  # configured ceilings are not lifted by Redis
        return [
            r_rate / 60_000.0,
            r_rate * r_burst / 60.0,
            t_rate / 60_000.0,
            t_rate * t_burst / 60.0,
            tokens,
            mode,
            requests,
            ttl,
            floors[0] / 60_000.0,
            floors[1] / 60_000.0,
            self.local.max_pause_s * 1000.0,
            "1" if limit.learn_rpm else "0",
            "1" if limit.learn_tpm else "0",
        ]

    def _unavailable(self, exc: BaseException) -> None:
        self.stats["redis_errors"] += 1
        self._link.failed(exc)
        if self.fail_closed:
            raise RateLimiterUnavailable(
                f"the shared rate limit in Redis at {safe_url(self._link.url)} is unreachable "
                "(rate_limiting.redis_failure: fail_closed)"
            ) from None

    # -- acquiring -----------------------------------------------------------------------------

    async def _acquire_local(self, key: Key, tokens: int) -> Reservation:
        reservation = await self.local.acquire(key, tokens)
        self._degraded_grant(reservation)
        return reservation

    async def acquire(self, key: KeyLike, tokens: int = 0) -> Reservation:
        key = Key.of(key)
        self._check(key, tokens)
        if self._link.skip and not self.fail_closed:
            return await self._acquire_local(key, tokens)
        view = self._views.obtain(key)
        lock = view.lock()
        queued = view.queued
        if self.max_queue is not None and lock.locked() and queued >= self.max_queue:
            self.stats["rejected"] += 1
            raise BackpressureError(key, queued, 0.0, f"is full (max_queue={self.max_queue})")
        started = time.monotonic()
        waited = False
        view.queued += 1
        try:
            await lock.acquire()  # FIFO within this process; only the head talks to Redis
        finally:
            view.queued -= 1
        try:
            while True:
                try:
                    wait_ms = await self._take(key, tokens)
                except self._link.errors as exc:
                    self._unavailable(exc)
                    return await self._acquire_local(key, tokens)
                if wait_ms <= 0:
                    break
                waited = view.spent = True
                view.waited_at = time.monotonic()
                if self.max_queue_wait_s is not None and wait_ms / 1000 > self.max_queue_wait_s:
                    self.stats["rejected"] += 1
                    raise BackpressureError(key, 0, wait_ms / 1000, "would wait too long")
                await asyncio.sleep(wait_ms / 1000)
        finally:
            lock.release()
        self.stats["acquired"] += 1
        self._record(view, key, tokens)
        if waited:
            self.stats["waited"] += 1
            self.stats["wait_s"] += time.monotonic() - started
        return Reservation(key, tokens, self._settle)

    async def _take(self, key: Key, tokens: int) -> float:
        """One ``take.lua``: 0 when both buckets granted the request, else the milliseconds
        until they would."""
        self.stats["redis_calls"] += 1
        keys = self._keys(key)
        script = self._link.client().register_script(lua("take"))
        answer = float(await script(keys=keys, args=self._args(key, tokens, "take")))
        self._link.recovered()
        if answer <= 0:
            await self._heartbeat()
        return answer

    def try_acquire(self, key: KeyLike, tokens: int = 0) -> Reservation | None:
        """Take capacity now if the shared buckets have it, else None: one Redis round trip,
        made on the sync entry points' loop (so not from that loop itself)."""
        key = Key.of(key)
        self._check(key, tokens)
        if self._link.skip and not self.fail_closed:
            return self._degraded_grant(self.local.try_acquire(key, tokens))
        try:
            wait_ms = _portal.run(self._take(key, tokens))
        except self._link.errors as exc:
            self._unavailable(exc)
            return self._degraded_grant(self.local.try_acquire(key, tokens))
        view = self._views.obtain(key)
        if wait_ms > 0:
            view.waited_at, view.spent = time.monotonic(), True
            return None
        self.stats["acquired"] += 1
        self._record(view, key, tokens)
        return Reservation(key, tokens, self._settle)

    def _record(self, view: _View, key: Key, tokens: int) -> None:
        """A grant of the shared buckets, for ``learning``'s send rate; and whether the shared
        burst was spent before it (a take had to wait), which lets the burst widen where the
        server shows room (``Learner.widen``): the learning's own buckets are never taken."""
        self.learning.record(key, tokens, spent=view.spent)
        view.spent = False

    # -- corrections: reconcile, headers, 429 pauses -------------------------------------------

    def _settle(self, key: Key, tokens: int, requests: int) -> None:
        """A reservation granted by the shared buckets gives back (or charges) to them."""
        self._send(key, "give", tokens, requests)

    def observe(self, key: KeyLike, headers: Mapping[str, str]) -> None:
        """``x-ratelimit-*`` headers tighten the stand-in and cap the shared buckets."""
        key = Key.of(key)
        self.local.observe(key, headers)
        rooms = self.learning.observe(key, headers)
        self._share_learned(key)
        if rooms:  # a burst widened into the room the server showed: the shared one too
            tokens, requests = (int(rooms.get(n, -1)) for n in ("tokens", "requests"))
            self._send(key, "room", tokens, requests)
        remaining = [announced(headers, n).remaining for n in ("tokens", "requests")]
        if remaining != [None, None]:
            tokens, requests = (-1 if r is None else int(r) for r in remaining)
            self._send(key, "cap", tokens, requests)

    def observe_429(
        self, key: KeyLike, headers: Mapping[str, str], *, admitted: int | None = None
    ) -> float:
        """Pause the key everywhere for the server's retry-after (or reset). ``admitted``:
        the attempt's number through this process's gate, which ``learning`` keeps."""
        key = Key.of(key)
        seconds = self.local.observe_429(key, headers)
        self.learning.throttled(key, headers, admitted=admitted)
        self._share_learned(key, drop=True)
        self._share_pause(key, seconds)
        self.observe(key, headers)
        return seconds

    def pause(self, key: KeyLike, seconds: float) -> None:
        """Hold every request of ``key``, in every process, for ``seconds``."""
        key = Key.of(key)
        seconds = min(max(0.0, seconds), self.local.max_pause_s)
        self.local.pause(key, seconds)
        self._share_pause(key, seconds)

    def _share_pause(self, key: Key, seconds: float) -> None:
        self.stats["paused"] += 1
        pause_key = self._keys(key)[2]
        ms = max(0.0, seconds) * 1000

        async def send() -> None:
            await self._link.client().eval(lua("pause"), 1, pause_key, ms)

        self._run(send)

    def _share_learned(self, key: Key, *, drop: bool = False) -> None:
        """Tell the other processes what this one learned of ``key`` (only when it changed, or
        after a 429: ``drop``), and take what they have learned (learn.lua)."""
        rates = self.learning.rates(key)
        view = self._views.obtain(key)
        epoch, agreed = view.agreed
        if not drop and rates == agreed:
            return
        view.agreed = (epoch, rates)  # one message per change, not one per answer
        self._run(lambda: self._learn(key, view, drop=drop))

    async def _learn(self, key: Key, view: _View, *, drop: bool) -> None:
        """One learn.lua: send this process's rates of ``key``, adopt what the hash holds."""
        epoch, rates = view.agreed
        args: list[Any] = ["drop" if drop else "set", epoch, _LEARNED_TTL_MS]
        for rate in rates:
            args += ["0", "1"] if rate is None else [repr(rate[0]), repr(rate[1])]
        answer = await self._link.client().eval(lua("learn"), 1, self._keys(key)[3], *args)
        values = [_text(v) for v in answer] if isinstance(answer, list) else []
        requests, tokens = (
            ("garbage", "garbage")
            if len(values) != 5 or "" in values
            else (_rate(values[1], values[2]), _rate(values[3], values[4]))
        )
        if requests != "garbage" and tokens != "garbage":
            shared = (requests, tokens)
            if shared != self.learning.rates(key):
                self.learning.follow(key, *shared)
        view.agreed = (_epoch(values[0] if values else ""), self.learning.rates(key))

    def _send(self, key: Key, mode: str, tokens: int, requests: int) -> None:
        keys, args = self._keys(key), self._args(key, tokens, mode, requests)

        async def send() -> None:
            await self._link.client().eval(lua("take"), len(keys), *keys, *args)

        self._run(send)

    def _run(self, send: Callable[[], Awaitable[None]]) -> None:
        """A correction to the shared state, not waited for (see ``Link.send``)."""
        if not self._link.skip:
            self._link.send(send, self._redis_error)

    def _redis_error(self, exc: BaseException) -> None:
        self.stats["redis_errors"] += 1
        self._link.failed(exc)

    async def flush(self) -> None:
        """Wait until the corrections sent so far (reconciliations, pauses, header caps) have
        reached Redis."""
        await self._link.flush()

    async def aclose(self) -> None:
        """Wait for corrections still being sent, then close this loop's Redis client."""
        await self._link.aclose()

    async def reset(self, key: KeyLike) -> None:
        """Forget the shared state of ``key`` (tests, operators)."""
        await self._link.client().delete(*self._keys(Key.of(key)))


_BUSY_WINDOW_S = 1.0  # a take waited this recently: the shared rate binds
_LEARNED_TTL_MS = 600_000  # learned rates outlive a pause in traffic, not a changed server


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _epoch(text: str) -> int:
    """learn.lua's epoch as it answered it; 0 for what no script wrote (a digit string of
    thousands of digits was a ``ValueError`` from ``int``, taken as "Redis is down")."""
    return int(text) if text.isdigit() and len(text) <= 15 else 0


def _rate(per_minute: str, burst_s: str) -> tuple[float, float] | Literal["garbage"] | None:
    """A (per minute, burst) pair as learn.lua stores it (0 per minute: not limited);
    ``"garbage"`` for values no limiter wrote (Redis is shared: read it as untrusted)."""
    try:
        rate, burst = float(per_minute), float(burst_s)
    except ValueError:
        return "garbage"
    if not (math.isfinite(rate) and 0 <= rate < 1e12 and 0 < burst <= 60):
        return "garbage"
    return None if rate == 0 else (max(rate, 1.0), burst)


def _divided(limit: int | None, share: int) -> int | None:
    return None if limit is None else max(1, limit // share)
