"""Breaker openings shared across processes through Redis.

Each process keeps its own window; an opening is published as a key with a TTL equal to the open
time (``SET key PX``), and the other processes look at it (at most every ``sync_s``) before
admitting a call, so once one has tripped every worker fails fast.
"""

from __future__ import annotations

import time

from rat_langchain.guards.breaker import REMOTE_REASON, CircuitBreaker, State, StateChange
from rat_langchain.guards.key import Key
from rat_langchain.guards.redis._link import Link, safe_url

__all__ = ["SharedBreakerState"]


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
        self._link = Link(url, timeout_s=timeout_s, retry_s=retry_s, name="breaker sharing")
        self._checked: dict[str, float] = {}
        self.stats = {"published": 0, "applied": 0, "redis_errors": 0}

    def __repr__(self) -> str:
        return f"SharedBreakerState({safe_url(self._link.url)!r})"

    def _key(self, breaker: CircuitBreaker) -> str:
        return f"{self.prefix}:breaker:{breaker.shared_name or breaker.name}"

    def attach(self, breaker: CircuitBreaker, key: Key | None = None) -> None:
        """Share ``breaker``'s openings; named in Redis by ``key.id`` (unambiguous, unlike the
        breaker's display name) when a key is given."""
        breaker.shared = self
        if key is not None:
            breaker.shared_name = key.id
        breaker.add_listener(lambda change: self._on_change(breaker, change))

    def _on_change(self, breaker: CircuitBreaker, change: StateChange) -> None:
        if change.new != State.OPEN or change.reason.startswith(REMOTE_REASON):
            return
        key, ms = self._key(breaker), max(1, int(breaker.open_for_s * 1000))
        self.stats["published"] += 1
        self._link.send(lambda: self._link.client().set(key, breaker.name, px=ms), self._failed)

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
        await self._link.flush()

    async def aclose(self) -> None:
        await self.flush()
        await self._link.aclose()
