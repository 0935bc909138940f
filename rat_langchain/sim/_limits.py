"""RPM/TPM enforcement as OpenAI does it: buckets refilling continuously to their per-minute limit.

The clock is a parameter so tests drive time by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


def format_reset(seconds: float) -> str:
    """Format a duration like OpenAI's ``x-ratelimit-reset-*`` headers: ``20ms``, ``6m0s``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{int(rest)}s"


class _Bucket:
    """Refills at ``limit`` per minute; holds at most ``window_s`` seconds' worth (a burst)."""

    def __init__(self, limit: int, clock: Callable[[], float], window_s: float = 60.0) -> None:
        self.limit = limit
        self.capacity = limit * window_s / 60.0
        self._clock = clock
        self._level = self.capacity
        self._stamp = clock()

    @property
    def _rate(self) -> float:
        return self.limit / 60.0

    def level(self) -> float:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self._rate)
        self._stamp = now
        return self._level

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` fits (0 now); more than a burst waits for a full bucket."""
        missing = min(amount, self.capacity) - self.level()
        return 0.0 if missing <= 0 else missing / self._rate

    def take(self, amount: float) -> None:
        self._level = self.level() - amount

    def until_full(self) -> float:
        return (self.capacity - self.level()) / self._rate


class _Window:
    """At most ``limit x window_s / 60`` per window of ``window_s`` seconds, counted from zero
    at each window's start (windows aligned to the clock)."""

    def __init__(self, limit: int, clock: Callable[[], float], window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.capacity = max(1.0, limit * window_s / 60.0)
        self._clock = clock
        self._start = self._window_start()
        self._used = 0.0

    def _window_start(self) -> float:
        return math.floor(self._clock() / self.window_s) * self.window_s

    def level(self) -> float:
        start = self._window_start()
        if start != self._start:
            self._start, self._used = start, 0.0
        return self.capacity - self._used

    def wait_for(self, amount: float) -> float:
        if min(amount, self.capacity) <= self.level():
            return 0.0
        return self.until_full()

    def take(self, amount: float) -> None:
        self.level()
        self._used += amount

    def until_full(self) -> float:
        return max(0.0, self._start + self.window_s - self._clock())


@dataclass(frozen=True)
class Decision:
    """Outcome of one admission check: allowed or not, and the headers to send either way."""

    allowed: bool
    headers: dict[str, str]
    limited_by: str | None = None
    retry_after_s: float = 0.0
    too_large: bool = False


class RateLimits:
    """Admits a request only if both buckets can pay for it; charges both or neither."""

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        clock: Callable[[], float],
        window_s: float = 60.0,
        *,
        style: str = "bucket",
        headers: str = "openai",
        retry_after: bool = True,
        lying: bool = False,
        announced: tuple[int | None, int | None] = (None, None),
    ) -> None:
        self._clock = clock
        kind = _Window if style == "fixed_window" else _Bucket
        self.requests: _Bucket | _Window | None = kind(rpm, clock, window_s) if rpm else None
        self.tokens: _Bucket | _Window | None = kind(tpm, clock, window_s) if tpm else None
        self.header_style = headers
        self.retry_after = retry_after
        self.lying = lying
        self.announced = dict(zip(("requests", "tokens"), announced, strict=True))

    def admit(self, tokens: int) -> Decision:
        waits: dict[str, float] = {}
        too_large = self.tokens is not None and tokens > self.tokens.limit
        if self.requests is not None:
            waits["requests"] = self.requests.wait_for(1)
        if self.tokens is not None:
            waits["tokens"] = 0.0 if too_large else self.tokens.wait_for(tokens)
        blocked = {name: wait for name, wait in waits.items() if wait > 0}
        if too_large:
            return Decision(False, self._headers(), "tokens", 0.0, too_large=True)
        if blocked:
            name, wait = max(blocked.items(), key=lambda item: item[1])
            headers = self._headers()
            if self.lying:
                headers["retry-after"] = "100000"
            elif self.retry_after:
                headers["retry-after"] = str(max(1, math.ceil(wait)))
                if self.header_style == "openai":
                    headers["retry-after-ms"] = str(math.ceil(wait * 1000))
            return Decision(False, headers, name, wait)
        if self.requests is not None:
            self.requests.take(1)
        if self.tokens is not None:
            self.tokens.take(tokens)
        return Decision(True, self._headers())

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.header_style == "none":
            return headers
        for name, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is None:
                continue
            remaining = max(0, math.floor(bucket.level()))
            limit = bucket.limit
            if (announced := self.announced[name]) is not None:  # a limit not the one enforced
                used = math.ceil(bucket.capacity - bucket.level())
                remaining, limit = max(0, announced - used), announced
            if self.lying:
                remaining = -(10**9)
            headers[f"x-ratelimit-remaining-{name}"] = str(remaining)
            if self.header_style == "azure":  # no limit; reset in whole seconds
                headers[f"x-ratelimit-reset-{name}"] = str(math.ceil(bucket.until_full()))
            else:
                headers[f"x-ratelimit-limit-{name}"] = str(limit)
                headers[f"x-ratelimit-reset-{name}"] = format_reset(bucket.until_full())
        return headers
