"""The retry policy, on tenacity: which failures are retried, how long to wait, when to stop.

Retried: 429 (except ``insufficient_quota``), 408, 409, 5xx, timeouts, connection errors and
malformed bodies. Never: 400/401/403/404/422 — retrying the caller's mistake only burns quota — nor
a call refused by an open circuit. The server's ``retry-after-ms`` / ``retry-after`` wins over
backoff; otherwise full-jitter exponential backoff. Stop after ``max_attempts`` or before a sleep
would cross the call's deadline, whichever comes first. The openai SDK's own retries are switched
off wherever this policy runs, so nothing is retried twice over.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import openai
import tenacity

from rat_langchain.config import RetriesConfig
from rat_langchain.guards.classify import is_retryable
from rat_langchain.guards.headers import retry_after_seconds

__all__ = ["RetryPolicy", "server_wait"]


def server_wait(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``/``retry-after``), if it did."""
    if isinstance(exc, openai.APIStatusError):
        return retry_after_seconds(exc.response.headers)
    return None


# One default per setting: the config model's (performance.retries).
_DEFAULTS = RetriesConfig()


class _wait_server_or_backoff(tenacity.wait.wait_base):
    """The server's Retry-After when it sent one (capped), else full-jitter backoff."""

    def __init__(self, backoff: tenacity.wait.wait_base, cap: float) -> None:
        self.backoff = backoff
        self.cap = cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        asked = server_wait(exc) if exc is not None else None
        if asked is not None:
            return min(asked, self.cap)
        return float(self.backoff(retry_state))


@dataclass(frozen=True)
class RetryPolicy:
    """Stateless, shareable retry settings; each call gets its own tenacity state.

    Example::

        policy = RetryPolicy(max_attempts=4)
        async for attempt in policy.retrying(deadline_s=30):
            with attempt:
                await client.chat.completions.create(...)
    """

    max_attempts: int = _DEFAULTS.max_attempts
    initial_backoff_s: float = _DEFAULTS.initial_backoff_s
    max_backoff_s: float = _DEFAULTS.max_backoff_s
    max_server_wait_s: float = _DEFAULTS.max_server_wait_s

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")

    @classmethod
    def from_config(cls, config: RetriesConfig) -> RetryPolicy:
        return cls(
            max_attempts=config.max_attempts if config.enabled else 1,
            initial_backoff_s=config.initial_backoff_s,
            max_backoff_s=config.max_backoff_s,
            max_server_wait_s=config.max_server_wait_s,
        )

    @functools.cached_property
    def _wait(self) -> tenacity.wait.wait_base:
        backoff = tenacity.wait_random_exponential(
            multiplier=self.initial_backoff_s, max=self.max_backoff_s
        )
        return _wait_server_or_backoff(backoff, self.max_server_wait_s)

    def wait(self) -> tenacity.wait.wait_base:
        """The wait strategy: the server's Retry-After, else full-jitter exponential backoff."""
        return self._wait

    def delay(self, exc: BaseException, attempt_number: int) -> float:
        """The wait after attempt ``attempt_number`` failed with ``exc``, computed by the same
        tenacity strategy ``retrying`` uses (the guards' engine asks this directly: its sync
        and async drivers share one decision, and its success path builds no tenacity state)."""
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt_number
        state.set_exception((type(exc), exc, exc.__traceback__))
        return float(self._wait(state))

    def next_wait(
        self,
        exc: BaseException,
        attempt_number: int,
        remaining_s: float | None,
        *,
        held: float | None = None,
        throttled_s: float | None = None,
    ) -> float | None:
        """Whether to retry after attempt ``attempt_number`` failed with ``exc``, and after
        how long: None when the failure is not retryable, the attempts are spent, or the wait
        would cross the deadline ``remaining_s`` from now (tenacity's ``stop_after_attempt |
        stop_before_delay``, as ``retrying`` builds it).

        ``held``: a rate limiter saw this 429 and holds the key for that many seconds (its
        own backoff, where the server said nothing of when to come back), and its buckets and
        window pace what follows. A 429 without a retry-after then waits no backoff of its
        own: the limiter decides when it goes. A backoff on top (up to 0.5 s after a first
        429, a second after a second) left the calls refused last idle after the key was free
        again: the tail of a burst on a silent per-second limit finished a second after the
        server would have taken it. The server's own retry-after is still honoured, as
        always.

        ``throttled_s``: seconds since this call's first 429 that a limiter held. Such 429s
        are not the server failing but the limiter learning, so past ``max_attempts`` they are
        retried for as long as one wait the server may ask for (``max_server_wait_s``) from
        the first: a bulk embedding against a silent token limit had requests refused four
        times in a row while the limiter found the rate (6 % of them 429), and the whole
        ``aadd_texts`` failed. A server that refuses for longer is out of capacity: the call
        fails then, as before."""
        if not is_retryable(exc):
            return None
        paced = held is not None and server_wait(exc) is None
        wait = held if paced and held is not None else self.delay(exc, attempt_number)
        if attempt_number >= self.max_attempts:
            learning = (
                held is not None
                and isinstance(exc, openai.RateLimitError)
                and throttled_s is not None
                and throttled_s + wait < self.max_server_wait_s
            )
            if not learning:
                return None
        if remaining_s is not None and wait >= remaining_s:
            return None
        return 0.0 if paced else wait

    def retrying(
        self,
        *,
        max_attempts: int | None = None,
        deadline_s: float | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        before_sleep: Callable[[tenacity.RetryCallState], Any] | None = None,
    ) -> tenacity.AsyncRetrying:
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(
            self.max_attempts if max_attempts is None else max_attempts
        )
        if deadline_s is not None:
            stop = stop | tenacity.stop_before_delay(deadline_s)
        return tenacity.AsyncRetrying(
            stop=stop,
            wait=self.wait(),
            retry=tenacity.retry_if_exception(is_retryable),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
