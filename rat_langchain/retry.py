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

from rat_langchain.breaker import TRANSIENT_ERRORS, CircuitOpenError, quota_exhausted
from rat_langchain.config import RetriesConfig
from rat_langchain.errors import RatError
from rat_langchain.ratelimit import RequestTooLarge, retry_after_seconds

__all__ = ["ApiKeyError", "RetryPolicy", "explain", "is_retryable", "server_wait"]

_RETRY_STATUS = {408, 409, 429}


class ApiKeyError(RatError):
    """The endpoint rejected the API key (401) or its permissions (403). Retrying cannot help."""


def is_retryable(exc: BaseException) -> bool:
    """True for failures that a later attempt can fix."""
    if isinstance(exc, CircuitOpenError | RequestTooLarge | ApiKeyError):
        return False
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return not quota_exhausted(exc)
        return status in _RETRY_STATUS or status >= 500
    return isinstance(exc, TRANSIENT_ERRORS)


def server_wait(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``/``retry-after``), if it did."""
    if isinstance(exc, openai.APIStatusError):
        return retry_after_seconds(exc.response.headers)
    return None


def explain(exc: BaseException, endpoint: str = "") -> BaseException:
    """Turn a 401/403 into :class:`ApiKeyError` with a message about the key (never the key)."""
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        where = f" by {endpoint}" if endpoint else ""
        what = "rejected" if exc.status_code == 401 else "refused for this resource"
        return ApiKeyError(
            f"the API key was {what}{where} (HTTP {exc.status_code}); check OPENAI_API_KEY or "
            "endpoint.api_key in config.yaml, and the key's project and permissions"
        )
    return exc


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

    max_attempts: int = 4
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 20.0
    max_server_wait_s: float = 60.0

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

    def first_wait(self, exc: BaseException) -> float:
        """The wait after a first failed attempt, computed by the same tenacity strategy."""
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.set_exception((type(exc), exc, exc.__traceback__))
        return float(self._wait(state))

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
