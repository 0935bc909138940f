"""A configured ``rpm_limit`` is a ceiling whatever the server says (issue 21): random and
hostile header sequences (announced limits of 10^9, negative remaining, resets, retry-afters,
garbage) never let the limiter grant more than the configured rate plus its one burst."""

from __future__ import annotations

import random

import pytest

from rat_langchain.guards.limiter import RateLimiter
from tests.support.clock import FakeClock

KEY = ("http://sim/v1", "gpt-4o-mini")
RPM = 600

_VALUES = ["1000000000", "0", "-1000000000", "600", "60000", "nan", "inf", "1e308", "abc", ""]
_DURATIONS = ["0s", "1ms", "6m0s", "9999h", "-5s", "1e30", "x", "0.5"]


def _headers(rng: random.Random) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name in ("requests", "tokens"):
        if rng.random() < 0.6:
            headers[f"x-ratelimit-limit-{name}"] = rng.choice(_VALUES)
        if rng.random() < 0.6:
            headers[f"x-ratelimit-remaining-{name}"] = rng.choice(_VALUES)
        if rng.random() < 0.4:
            headers[f"x-ratelimit-reset-{name}"] = rng.choice(_DURATIONS)
    if rng.random() < 0.2:
        headers["retry-after"] = rng.choice(["0", "1", "100000", "-3", "soon"])
    return headers


@pytest.mark.parametrize("seed", range(20))
def test_a_configured_rpm_is_never_exceeded_whatever_the_headers(seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock(1000.0)
    limiter = RateLimiter(rpm=RPM, tpm=None, clock=clock, max_pause_s=2.0)
    burst = RPM / 60 * limiter.default.burst_s  # what a full bucket holds
    granted: list[float] = []
    for _ in range(2400):  # 120 s in 50 ms steps
        clock.now += 0.05
        for _ in range(rng.randrange(40)):
            if limiter.try_acquire(KEY) is not None:
                granted.append(clock.now)
                limiter.acknowledge(KEY)
        if rng.random() < 0.3:
            limiter.observe(KEY, _headers(rng))
        if rng.random() < 0.05:
            limiter.observe_429(KEY, _headers(rng))
    assert granted, "nothing was ever granted"
    start = 0
    for end, at in enumerate(granted):  # every 60 s window of grants
        while granted[start] < at - 60.0:
            start += 1
        assert end - start + 1 <= RPM + burst + 1, f"{end - start + 1} granted within 60 s"
