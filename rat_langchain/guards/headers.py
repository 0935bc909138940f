"""Reading what servers say about limits: ``x-ratelimit-*``, ``retry-after(-ms)``, durations.

Header values are untrusted input: anything unreadable, negative or not finite is ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

__all__ = ["number", "parse_duration", "retry_after_seconds"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_duration(value: str) -> float | None:
    """Seconds in an OpenAI reset header (``20ms``, ``1.5s``, ``6m0s``); None if unreadable."""
    value = value.strip()
    if not value:
        return None
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        plain = number(value)
        return plain if plain is not None and plain >= 0 else None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait: ``retry-after-ms`` first, then ``retry-after`` in seconds."""
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = number(lowered.get("retry-after-ms"))
    if ms is not None and ms >= 0:
        return ms / 1000.0
    seconds = number(lowered.get("retry-after"))
    if seconds is not None and seconds >= 0:
        return seconds
    return None
