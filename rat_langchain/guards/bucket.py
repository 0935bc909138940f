"""A limit and the token bucket that enforces one dimension of it (requests or tokens per
minute), with nothing of queues, servers or learning: those sit on top (guards.state,
guards.feedback, guards.limiter).

Why a bucket of our own and not aiolimiter's ``AsyncLimiter``: a bucket here refills
continuously but also goes into debt (a request larger than one burst, a reconciliation that
charges more than was reserved), adopts a new rate without a fresh burst, widens or narrows
its burst, and holds its refill until the server has answered once. All of it on an injected
clock, so the tests never sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from rat_langchain.config import RateLimitingConfig
from rat_langchain.errors import RequestTooLarge
from rat_langchain.guards.key import Key

__all__ = ["EPSILON", "START_RPM", "START_TPM", "RateLimit", "TokenBucket", "check_size"]

EPSILON = 1e-9  # float dust: below this, an amount is there
_DEFAULTS = RateLimitingConfig()  # one default per setting: the config model's

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
        if missing <= EPSILON:  # float dust must not arm a timer for an instant from now
            return 0.0
        held = 0.0 if self._hold_until is None else max(0.0, self._hold_until - self._clock())
        return held + missing / self.rate

    def take(self, amount: float) -> None:
        self.level()
        self.take_refilled(amount)

    def fits(self, amount: float) -> bool:
        """Whether ``amount`` is available now (refills the level as a side effect)."""
        return min(amount, self.capacity) - self.level() <= EPSILON

    def take_refilled(self, amount: float) -> None:
        """``take`` right after ``level()``/``fits()``: the admission fast path refills once."""
        if self._first_hold_s > 0 and self._hold_until is None:
            self._hold_until = self._clock() + self._first_hold_s
            self._first_hold_s = 0.0  # only the first burst is held
        self._level -= amount

    def release_hold(self) -> None:
        """The server has answered: refill from now on, and no later first take holds it
        (a bucket first used after the answer, as a key left open is when it closes, or its
        limit is announced, was held for ``first_hold_s`` with nothing to wait for)."""
        self._first_hold_s = 0.0
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

    def resize_burst(self, burst_s: float, *, room: float | None = None) -> None:
        """Hold ``burst_s`` seconds' worth from now on (wider or narrower).

        Widening adds nothing at once (the level grows into the new room at the bucket's
        rate) unless ``room`` says how much the server has left: then the level rises to it
        at once, within the new capacity (never lowered by it). Why: a burst widened by one
        second at a time while the level refills at the rate never lets more go than the
        rate, and a per-minute bucket's minute of burst (20,000 texts to embed at once) went
        at 0.64 of the steady limit. take.lua's ``room`` does the same to a shared bucket."""
        self.level()
        wider = burst_s > self.burst_s
        self.burst_s = burst_s
        self.capacity = self.per_minute * burst_s / 60.0
        if room is not None and wider:
            self._level = max(self._level, room)
        self._level = min(self._level, self.capacity)


def check_size(key: Key, tokens: int, per_minute: float | None) -> None:
    """``RequestTooLarge`` if ``tokens`` can never fit a token limit of ``per_minute`` (None:
    no token limit): waiting for it would never end."""
    if per_minute is not None and tokens > per_minute:
        raise RequestTooLarge(
            f"a request of {tokens} tokens can never fit the {key} tokens-per-minute limit "
            f"({per_minute:.0f} = tpm_limit x safety_margin); raise "
            "performance.rate_limiting.tpm_limit or split the request"
        )
