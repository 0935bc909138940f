"""Reading what servers say about limits: ``x-ratelimit-*``, ``retry-after(-ms)``, durations.

Header values are untrusted input: anything unreadable, negative or not finite is ignored, and
so is anything longer than ``MAX_VALUE_CHARS`` before it is parsed. Why the length bound: the
duration pattern backtracks over a run of digits with no unit, so an 8000-digit reset header
cost a second of the event loop per answer (quadratic); no real value is longer than 40.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "MAX_VALUE_CHARS",
    "Announced",
    "announced",
    "number",
    "parse_duration",
    "retry_after_seconds",
]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
MAX_VALUE_CHARS = 64  # a header value longer than this is garbage, left unparsed


def number(value: str | None) -> float | None:
    if value is None or len(value) > MAX_VALUE_CHARS:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_duration(value: str) -> float | None:
    """Seconds in an OpenAI reset header (``20ms``, ``1.5s``, ``6m0s``); None if unreadable."""
    value = value.strip()
    if not value or len(value) > MAX_VALUE_CHARS:
        return None
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        plain = number(value)
        return plain if plain is not None and plain >= 0 else None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def retry_after_seconds(
    headers: Mapping[str, str], *, now: Callable[[], float] = time.time
) -> float | None:
    """The server's requested wait: ``retry-after-ms`` first, then ``retry-after`` in seconds
    or as an HTTP date (RFC 9110; a date in the past is no wait). ``now`` is the wall clock
    the date is measured against."""
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = number(lowered.get("retry-after-ms"))
    if ms is not None and ms >= 0:
        return ms / 1000.0
    raw = lowered.get("retry-after")
    seconds = number(raw)
    if seconds is not None and seconds >= 0:
        return seconds
    if raw and len(raw) <= MAX_VALUE_CHARS:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return max(0.0, when.timestamp() - now())
    return None


@dataclass(frozen=True)
class Announced:
    """What a response says of one dimension (requests or tokens): its limit per minute, what
    is left, and when it is full again. A project-level limit (``x-ratelimit-*-project-tokens``)
    counts too: the tighter of the two binds."""

    limit: float | None
    remaining: float | None
    reset_s: float | None


def announced(headers: Mapping[str, str], name: str) -> Announced:
    """``Announced`` for ``name`` ("requests" or "tokens") from ``x-ratelimit-*`` headers;
    unreadable, infinite or negative values are left out (headers are untrusted)."""
    lowered = {k.lower(): v for k, v in headers.items()}

    def tightest(kind: str, parse: Callable[[str], float | None]) -> float | None:
        values = [
            parse(value)
            for header in (f"x-ratelimit-{kind}-{name}", f"x-ratelimit-{kind}-project-{name}")
            if (value := lowered.get(header)) is not None
        ]
        found = [v for v in values if v is not None and v >= 0]
        return min(found) if found else None

    def plain(value: str) -> float | None:
        return number(value)

    return Announced(
        limit=tightest("limit", plain),
        remaining=tightest("remaining", plain),
        reset_s=tightest("reset", parse_duration),
    )
