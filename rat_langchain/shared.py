"""One quota and one breaker state across processes, through Redis.

Why a script of our own rather than pyrate-limiter's ``RedisStateStore``: a request must take
from the RPM and the TPM bucket together or from neither, and must be able to give unused tokens
back after the call (reconciliation with ``usage``); pyrate-limiter's buckets are separate rate
items with no refund. The script below is ~30 lines of Lua: both buckets are refilled from the
Redis server's clock (``TIME``, not each worker's), checked and charged atomically; when they
do not fit it answers how long to wait, and the caller sleeps exactly that.

Within a process callers still queue first in, first out (an ``asyncio.Lock`` per key, which is
fair), so only the head of each process's queue talks to Redis. If Redis cannot be reached the
limiter degrades to its local buckets (the ordinary :class:`RateLimiter` it extends) with a
warning, and tries Redis again after ``retry_s``; ``redis_failure: fail_closed`` raises
:class:`RateLimiterUnavailable` instead. Every Redis call has a short socket timeout, so no call
hangs on a dead server.

Breakers: each process keeps its own window; an opening is published as a key with a TTL equal
to the open time (``SET key PX``), and the other processes look at it (at most every
``sync_s``) before admitting a call, so once one has tripped every worker fails fast.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from rat_langchain.breaker import REMOTE_REASON, CircuitBreaker, State, StateChange
from rat_langchain.config import RateLimitingConfig
from rat_langchain.errors import RatError
from rat_langchain.ratelimit import Key, RateLimit, RateLimiter, RateLimitExceeded, Reservation

__all__ = ["RateLimiterUnavailable", "RedisRateLimiter", "SharedBreakerState"]

_log = logging.getLogger(__name__)

# KEYS: requests bucket, tokens bucket, pause key.
# ARGV: requests per ms, requests capacity, tokens per ms, tokens capacity, tokens wanted,
#       mode ("take" | "give" | "cap"), give-back requests (give mode), ttl ms.
# take: charge both or neither; returns "0" or the wait in ms (as a string: floats survive).
# give: add ARGV[5] tokens (negative = charge) and ARGV[7] requests back, capped at capacity.
# cap:  lower the levels to ARGV[5] tokens / ARGV[7] requests (never raise them); -1 = skip.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local r_rate, r_cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local t_rate, t_cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens, mode, reqs, ttl = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local function level(key, rate, cap)
  if rate <= 0 then return nil end
  local v = redis.call('HMGET', key, 'level', 'ts')
  local lvl, ts = tonumber(v[1]), tonumber(v[2])
  if lvl == nil then return cap end
  return math.min(cap, lvl + math.max(0, now - ts) * rate)
end
local function store(key, lvl)
  redis.call('HSET', key, 'level', tostring(lvl), 'ts', tostring(now))
  redis.call('PEXPIRE', key, ttl)
end
local rl = level(KEYS[1], r_rate, r_cap)
local tl = level(KEYS[2], t_rate, t_cap)
if mode == 'give' then
  if rl ~= nil then store(KEYS[1], math.min(r_cap, rl + reqs)) end
  if tl ~= nil then store(KEYS[2], math.min(t_cap, tl + tokens)) end
  return '0'
end
if mode == 'cap' then
  if rl ~= nil and reqs >= 0 then store(KEYS[1], math.min(rl, reqs)) end
  if tl ~= nil and tokens >= 0 then store(KEYS[2], math.min(tl, tokens)) end
  return '0'
end
local wait = 0
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused > now then wait = paused - now end
if rl ~= nil and rl < 1 then wait = math.max(wait, (1 - rl) / r_rate) end
if tl ~= nil then
  local need = math.min(tokens, t_cap)
  if tl < need then wait = math.max(wait, (need - tl) / t_rate) end
end
if wait > 0 then return tostring(wait) end
if rl ~= nil then store(KEYS[1], rl - 1) end
if tl ~= nil then store(KEYS[2], tl - tokens) end
return '0'
"""

_PAUSE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local ms = tonumber(ARGV[1])
local untl = now + ms
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > cur then redis.call('SET', KEYS[1], tostring(untl), 'PX', math.ceil(ms) + 1) end
return '0'
"""


# KEYS: the workers' sorted set. ARGV: this worker's id, how long a silent worker counts (ms).
# Marks this worker alive now, forgets the silent ones, answers how many are alive.
_HEARTBEAT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl))
return redis.call('ZCARD', KEYS[1])
"""


class RateLimiterUnavailable(RatError):
    """Redis, which holds the shared quota, cannot be reached and ``redis_failure`` is
    ``fail_closed``: no request is sent rather than risk going over the shared budget."""


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class _Link:
    """Redis clients (one per event loop, plus one for sync callers) and the outage state."""

    def __init__(self, url: str, *, timeout_s: float, retry_s: float, name: str) -> None:
        try:
            import redis  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RatError(
                "the Redis backend needs the redis package: pip install 'rat-langchain[redis]'"
            ) from exc
        self.url = url
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.name = name
        self.down = False  # the last call to Redis failed: local state is in use
        self.down_until = 0.0  # ... and Redis is not tried again before this
        self.outages = 0
        self.errors: tuple[type[BaseException], ...] = _redis_errors()
        self.on_change: Callable[[bool], None] | None = None  # called with `down` on a change
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._sync: Any = None

    def __repr__(self) -> str:
        return f"_Link({_safe_url(self.url)!r}, degraded={self.degraded})"

    @property
    def degraded(self) -> bool:
        return self.down

    @property
    def skip(self) -> bool:
        """Redis is down and not due for another try yet."""
        return self.down and time.monotonic() < self.down_until

    def _options(self) -> dict[str, Any]:
        import redis

        return {
            "socket_timeout": self.timeout_s,
            "socket_connect_timeout": self.timeout_s,
            "retry_on_timeout": False,
            # one immediate retry on a connection error, on a new connection: after Redis
            # restarts, every pooled connection is dead, and without it each one would be
            # taken for a new outage (a dead server still fails fast: the retry is refused too)
            "retry_on_error": [redis.exceptions.ConnectionError],
        }

    def client(self) -> Any:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        loop = asyncio.get_running_loop()
        found = self._async.get(loop)
        if found is None:
            found = self._async[loop] = redis.asyncio.Redis.from_url(
                self.url, retry=Retry(NoBackoff(), 1), **self._options()
            )
        return found

    def sync_client(self) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if self._sync is None:
            self._sync = redis.Redis.from_url(
                self.url, retry=Retry(NoBackoff(), 1), **self._options()
            )
        return self._sync

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            self.outages += 1
            _log.warning(
                "%s: Redis at %s unreachable (%s); using local state for %.0f s",
                self.name,
                _safe_url(self.url),
                type(exc).__name__,
                self.retry_s,
            )
            if self.on_change is not None:
                self.on_change(True)
        self.down_until = time.monotonic() + self.retry_s

    def recovered(self) -> None:
        if self.down:
            _log.warning("%s: Redis at %s is back", self.name, _safe_url(self.url))
            self.down = False
            self.down_until = 0.0
            if self.on_change is not None:
                self.on_change(False)

    async def aclose(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover
            loop = None
        client = self._async.pop(loop, None) if loop is not None else None
        if client is not None:
            await client.aclose()
        self.close()

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None


def _safe_url(url: str) -> str:
    """The URL without its password, for logs and reprs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


class RedisRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose buckets live in Redis, shared by every process using it.

    Example::

        limiter = RedisRateLimiter(1200, 400_000, url="redis://127.0.0.1:6379/0")
        reservation = await limiter.acquire(("https://api.openai.com/v1", "gpt-4o-mini"), 800)

    Same interface and semantics as the local limiter (reservations, reconcile, headers, 429
    pauses, backpressure); while Redis is down it is the local limiter (``degraded``).
    """

    def __init__(
        self,
        rpm: int | None = 500,
        tpm: int | None = 200_000,
        *,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "rat",
        fail_closed: bool = False,
        timeout_s: float = 1.0,
        retry_s: float = 1.0,
        heartbeat_s: float = 1.0,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("first_hold_s", None)  # a per-process notion; the shared bucket has none
        super().__init__(rpm, tpm, **kwargs)
        self.prefix = prefix
        self.fail_closed = fail_closed
        self._link = _Link(url, timeout_s=timeout_s, retry_s=retry_s, name="rate limiter")
        self._key_locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Key, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()
        self._background: set[asyncio.Task[Any]] = set()
        self._queued: dict[Key, int] = {}
        self.stats.update(redis_calls=0, redis_errors=0, degraded_acquires=0)
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
    def from_config(cls, config: RateLimitingConfig, **kwargs: Any) -> RateLimiter:
        kwargs.setdefault("url", config.redis_url)
        kwargs.setdefault("fail_closed", config.redis_failure == "fail_closed")
        return super().from_config(config, **kwargs)

    def __repr__(self) -> str:
        return (
            f"RedisRateLimiter({_safe_url(self._link.url)!r}, rpm={self.default.rpm}, "
            f"tpm={self.default.tpm}, degraded={self.degraded})"
        )

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

    def limit_for(self, key: Key) -> RateLimit:
        """The local view's limit: the configured one, divided among the workers last seen
        alive while Redis is down. The shared buckets always use the configured one."""
        limit = super().limit_for(key)
        if self._share == 1:
            return limit
        return RateLimit(
            _divided(limit.rpm, self._share),
            _divided(limit.tpm, self._share),
            limit.safety_margin,
            limit.burst_s,
        )

    def _check(self, state: Any, key: Key, tokens: int) -> None:
        whole = super().limit_for(key)
        fits_whole = whole.tpm is None or tokens <= whole.tpm * whole.safety_margin
        if self._share > 1 and fits_whole and tokens >= 0:
            return  # too large for a degraded share, maybe, but not for the whole budget: the
            # local bucket lends it (waits for a full bucket, goes into debt), as for any big call
        super()._check(state, key, tokens)

    def _link_changed(self, down: bool) -> None:
        """Redis went away or came back: rebuild the local buckets for the new share (fresh
        ones: while Redis was up they were not the ones admitting calls)."""
        with self._lock:
            self._share = max(1, self.workers) if down else 1
            # empty while degraded: the shared bucket was spending this window until now, and
            # a fresh burst from every worker at once is what the server would answer with 429s
            self._rebuild_states(empty=down)
        if down and self._share > 1:
            _log.warning(
                "rate limiter: each of the %d workers seen on Redis takes 1/%d of the limit "
                "until it is back",
                self._share,
                self._share,
            )

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
            count = await self._link.client().eval(_HEARTBEAT_SCRIPT, 1, key, worker, ttl_ms)
        except self._link.errors:
            return  # the next take finds out whether Redis is down
        self.workers = max(1, int(count))

    def _heartbeat_sync(self) -> None:
        if not self._heartbeat_due():
            return
        key, worker, ttl_ms = self._heartbeat_args()
        try:
            count = self._link.sync_client().eval(_HEARTBEAT_SCRIPT, 1, key, worker, ttl_ms)
        except self._link.errors:
            return
        self.workers = max(1, int(count))

    # -- the script's arguments --------------------------------------------------------------

    def _keys(self, key: Key) -> list[str]:
        name = "|".join(key) if isinstance(key, tuple) else key
        base = f"{self.prefix}:rl:{name}"
        return [f"{base}:rpm", f"{base}:tpm", f"{base}:pause"]

    def _args(self, key: Key, tokens: int, mode: str, requests: int = 0) -> list[Any]:
        limit = super().limit_for(key)  # the shared buckets hold the whole limit
        margin, burst = limit.safety_margin, limit.burst_s
        r_rate = (limit.rpm or 0) * margin / 60_000.0
        t_rate = (limit.tpm or 0) * margin / 60_000.0
        ttl = int(burst * 1000 * 2) + 1000
        return [
            r_rate,
            r_rate * burst * 1000,
            t_rate,
            t_rate * burst * 1000,
            tokens,
            mode,
            requests,
            ttl,
        ]

    def _unavailable(self, exc: BaseException) -> None:
        self.stats["redis_errors"] += 1
        self._link.failed(exc)
        if self.fail_closed:
            raise RateLimiterUnavailable(
                f"the shared rate limit in Redis at {_safe_url(self._link.url)} is unreachable "
                "(rate_limiting.redis_failure: fail_closed)"
            ) from None

    # -- acquiring -----------------------------------------------------------------------------

    def _lock_for(self, key: Key) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        locks = self._key_locks.setdefault(loop, {})
        lock = locks.get(key)
        if lock is None:
            lock = locks[key] = asyncio.Lock()
        return lock

    async def acquire(self, key: Key, tokens: int = 0) -> Reservation:
        with self._lock:
            state = self._state(key)
            self._check(state, key, tokens)
        if self._link.skip and not self.fail_closed:
            self.stats["degraded_acquires"] += 1
            return await super().acquire(key, tokens)
        lock = self._lock_for(key)
        queued = self._queued.get(key, 0)
        if self.max_queue is not None and lock.locked() and queued >= self.max_queue:
            self.stats["rejected"] += 1
            raise RateLimitExceeded(key, queued, 0.0, f"is full (max_queue={self.max_queue})")
        started = time.monotonic()
        waited = False
        self._queued[key] = queued + 1
        try:
            await lock.acquire()  # FIFO within this process; only the head talks to Redis
        finally:
            self._queued[key] -= 1
        try:
            client = self._link.client()
            script = client.register_script(_SCRIPT)
            while True:
                try:
                    self.stats["redis_calls"] += 1
                    answer = await script(
                        keys=self._keys(key), args=self._args(key, tokens, "take")
                    )
                except self._link.errors as exc:
                    self._unavailable(exc)
                    self.stats["degraded_acquires"] += 1
                    return await super().acquire(key, tokens)
                self._link.recovered()
                wait_ms = float(answer)
                if wait_ms <= 0:
                    await self._heartbeat()
                    break
                waited = True
                if self.max_queue_wait_s is not None and wait_ms / 1000 > self.max_queue_wait_s:
                    self.stats["rejected"] += 1
                    raise RateLimitExceeded(key, 0, wait_ms / 1000, "would wait too long")
                await asyncio.sleep(wait_ms / 1000)
        finally:
            lock.release()
        self.stats["acquired"] += 1
        if waited:
            self.stats["waited"] += 1
            self.stats["wait_s"] += time.monotonic() - started
        return Reservation(key, tokens, self)

    def try_acquire(self, key: Key, tokens: int = 0) -> Reservation | None:
        with self._lock:
            self._check(self._state(key), key, tokens)
        if self._link.skip and not self.fail_closed:
            return super().try_acquire(key, tokens)
        try:
            answer = self._sync_script(key, tokens, "take")
        except self._link.errors as exc:
            self._unavailable(exc)
            return super().try_acquire(key, tokens)
        if float(answer) > 0:
            return None
        self.stats["acquired"] += 1
        return Reservation(key, tokens, self)

    def acquire_blocking(self, key: Key, tokens: int = 0) -> Reservation:
        while True:
            with self._lock:
                self._check(self._state(key), key, tokens)
            if self._link.skip and not self.fail_closed:
                return super().acquire_blocking(key, tokens)
            try:
                answer = float(self._sync_script(key, tokens, "take"))
            except self._link.errors as exc:
                self._unavailable(exc)
                return super().acquire_blocking(key, tokens)
            if answer <= 0:
                self.stats["acquired"] += 1
                return Reservation(key, tokens, self)
            time.sleep(answer / 1000)

    def _sync_script(self, key: Key, tokens: int, mode: str, requests: int = 0) -> Any:
        client = self._link.sync_client()
        self.stats["redis_calls"] += 1
        answer = client.eval(_SCRIPT, 3, *self._keys(key), *self._args(key, tokens, mode, requests))
        self._link.recovered()
        if mode == "take":
            self._heartbeat_sync()
        return answer

    # -- corrections: reconcile, headers, 429 pauses -------------------------------------------

    def _adjust(self, key: Key, tokens: int, *, requests: int = 0) -> None:
        super()._adjust(key, tokens, requests=requests)  # the local view, used while degraded
        self._send(key, "give", tokens, requests)

    def observe(self, key: Key, headers: Mapping[str, str]) -> None:
        super().observe(key, headers)
        lowered = {k.lower(): v for k, v in headers.items()}
        remaining = [
            _int(lowered.get(f"x-ratelimit-remaining-{n}")) for n in ("tokens", "requests")
        ]
        if remaining != [None, None]:
            tokens, requests = (-1 if r is None else r for r in remaining)
            self._send(key, "cap", tokens, requests)

    def pause(self, key: Key, seconds: float) -> None:
        super().pause(key, seconds)
        pause_key = self._keys(key)[2]
        ms = max(0.0, seconds) * 1000

        async def send() -> None:
            await self._link.client().eval(_PAUSE_SCRIPT, 1, pause_key, ms)

        self._run(send, lambda: self._link.sync_client().eval(_PAUSE_SCRIPT, 1, pause_key, ms))

    def _send(self, key: Key, mode: str, tokens: int, requests: int) -> None:
        keys, args = self._keys(key), self._args(key, tokens, mode, requests)

        async def send() -> None:
            await self._link.client().eval(_SCRIPT, 3, *keys, *args)

        self._run(send, lambda: self._link.sync_client().eval(_SCRIPT, 3, *keys, *args))

    def _run(self, send: Callable[[], Awaitable[None]], send_sync: Callable[[], Any]) -> None:
        """A correction to the shared state: on this thread's loop as a tracked task (the
        caller is sync code inside the loop, e.g. a response callback), else right here."""
        if self._link.skip:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            try:
                send_sync()
            except self._link.errors as exc:
                self.stats["redis_errors"] += 1
                self._link.failed(exc)
            return

        async def guarded() -> None:
            try:
                await send()
            except self._link.errors as exc:
                self.stats["redis_errors"] += 1
                self._link.failed(exc)

        task = loop.create_task(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def flush(self) -> None:
        """Wait until the corrections sent so far (reconciliations, pauses, header caps) have
        reached Redis."""
        while self._background:
            await asyncio.wait(list(self._background))

    async def aclose(self) -> None:
        """Wait for corrections still being sent, then close this loop's Redis client."""
        await self.flush()
        await self._link.aclose()

    async def reset(self, key: Key) -> None:
        """Forget the shared state of ``key`` (tests, operators)."""
        await self._link.client().delete(*self._keys(key))


def _divided(limit: int | None, share: int) -> int | None:
    return None if limit is None else max(1, limit // share)


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


class SharedBreakerState:
    """Publishes breaker openings through Redis and applies other processes' openings.

    ``attach(breaker)`` publishes each local opening; ``await refresh(breaker)`` (the guard
    calls it before each attempt, at most once per ``sync_s`` per breaker) opens the local
    breaker when another process has published an opening that is still running.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "rat",
        sync_s: float = 0.1,
        timeout_s: float = 1.0,
        retry_s: float = 1.0,
    ) -> None:
        self.prefix = prefix
        self.sync_s = sync_s
        self._link = _Link(url, timeout_s=timeout_s, retry_s=retry_s, name="breaker sharing")
        self._checked: dict[str, float] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.stats = {"published": 0, "applied": 0, "redis_errors": 0}

    def __repr__(self) -> str:
        return f"SharedBreakerState({_safe_url(self._link.url)!r})"

    def _key(self, breaker: CircuitBreaker) -> str:
        return f"{self.prefix}:breaker:{breaker.name}"

    def attach(self, breaker: CircuitBreaker) -> None:
        breaker.shared = self
        breaker.add_listener(lambda change: self._on_change(breaker, change))

    def _on_change(self, breaker: CircuitBreaker, change: StateChange) -> None:
        if change.new != State.OPEN or change.reason.startswith(REMOTE_REASON):
            return
        key, ms = self._key(breaker), max(1, int(breaker.open_for_s * 1000))
        self.stats["published"] += 1
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            try:
                self._link.sync_client().set(key, breaker.name, px=ms)
            except self._link.errors as exc:
                self._failed(exc)
            return

        async def publish() -> None:
            try:
                await self._link.client().set(key, breaker.name, px=ms)
            except self._link.errors as exc:
                self._failed(exc)

        task = loop.create_task(publish())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _failed(self, exc: BaseException) -> None:
        self.stats["redis_errors"] += 1
        self._link.failed(exc)

    async def refresh(self, breaker: CircuitBreaker) -> None:
        """Open ``breaker`` here if another process has it open (cheap: cached ``sync_s``)."""
        now = time.monotonic()
        if self._link.skip or now - self._checked.get(breaker.name, -1e9) < self.sync_s:
            return
        self._checked[breaker.name] = now
        if breaker.state != State.CLOSED:
            return
        try:
            ttl_ms = await self._link.client().pttl(self._key(breaker))
        except self._link.errors as exc:
            self._failed(exc)
            return
        self._link.recovered()
        if ttl_ms is not None and ttl_ms > 0:
            self.stats["applied"] += 1
            breaker.open_remotely(ttl_ms / 1000)

    async def flush(self) -> None:
        """Wait until the openings published so far have reached Redis."""
        while self._background:
            await asyncio.wait(list(self._background))

    async def aclose(self) -> None:
        await self.flush()
        await self._link.aclose()
