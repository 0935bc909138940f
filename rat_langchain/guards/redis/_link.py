"""The connection to Redis shared by the limiter and the breaker state: clients per event loop,
short timeouts, and the outage state (down, since when, how many outages).

Why one place: both need the same rule for "Redis is down" (log once, try again after
``retry_s``, never hang on a dead server) and the same care never to show the password.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any

from rat_langchain import _portal
from rat_langchain.errors import RatError

__all__ = ["Link", "lua", "redis_errors", "safe_url"]

_log = logging.getLogger("rat_langchain.guards.redis")


@cache
def lua(name: str) -> str:
    """The Lua script ``name``.lua of this package, read once."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def redis_errors() -> tuple[type[BaseException], ...]:
    """What counts as "Redis is down": every error of the client (a refused connection, a
    timeout, and also a server at ``redis_url`` that does not speak Redis, which answers with
    a protocol error) and the OS's socket errors."""
    import redis.exceptions

    return (redis.exceptions.RedisError, OSError)


class Link:
    """Redis clients (one per event loop) and the outage state.

    Sync callers reach Redis through the sync entry points' loop (``_portal``) with the same
    async client and code: one path, not a sync twin of every call."""

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
        self.errors: tuple[type[BaseException], ...] = redis_errors()
        self.on_change: Callable[[bool], None] | None = None  # called with `down` on a change
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._background: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"Link({safe_url(self.url)!r}, degraded={self.degraded})"

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

    def send(
        self,
        make: Callable[[], Awaitable[Any]],
        on_error: Callable[[BaseException], None],
    ) -> None:
        """A write to Redis that the caller does not wait for (a correction, a published
        opening): a tracked task on the running loop (``flush`` waits for them); for a sync
        caller, run on the sync entry points' loop and waited for there. ``on_error`` hears
        of Redis being down; nothing is raised to the caller."""

        async def guarded() -> None:
            try:
                await make()
            except self.errors as exc:
                on_error(exc)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            _portal.run(guarded())
            return
        task = loop.create_task(guarded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def flush(self) -> None:
        """Wait until the writes sent so far have reached Redis (or failed)."""
        while self._background:
            await asyncio.wait(list(self._background))

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            self.outages += 1
            _log.warning(
                "%s: Redis at %s unreachable (%s); using local state for %.0f s",
                self.name,
                safe_url(self.url),
                type(exc).__name__,
                self.retry_s,
            )
            if self.on_change is not None:
                self.on_change(True)
        self.down_until = time.monotonic() + self.retry_s

    def recovered(self) -> None:
        if self.down:
            _log.warning("%s: Redis at %s is back", self.name, safe_url(self.url))
            self.down = False
            self.down_until = 0.0
            if self.on_change is not None:
                self.on_change(False)

    async def aclose(self) -> None:
        """Wait for writes still being sent, then close this loop's client."""
        await self.flush()
        client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


def safe_url(url: str) -> str:
    """The URL without its password, for logs and reprs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
