import pytest

from rat_langchain.sim import format_reset
from rat_langchain.sim._limits import RateLimits
from tests.support.clock import FakeClock


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.0201, "21ms"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (59.9921, "59.992s"),
        (360.0, "6m0s"),
        (61.5, "1m1s"),
    ],
)
def test_format_reset_matches_openai_style(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_rpm_bucket_admits_limit_then_429_with_exact_retry_after() -> None:
    clock = FakeClock(1000.0)
    limits = RateLimits(rpm=60, tpm=None, clock=clock)
    for _ in range(60):
        assert limits.admit(1).allowed
    denied = limits.admit(1)
    assert not denied.allowed
    assert denied.limited_by == "requests"
    assert denied.headers["retry-after-ms"] == "1000"  # 60/min refills one per second
    assert denied.headers["retry-after"] == "1"
    assert denied.headers["x-ratelimit-remaining-requests"] == "0"
    clock.now += 0.5
    assert not limits.admit(1).allowed
    clock.now += 0.5
    ok = limits.admit(1)
    assert ok.allowed
    assert ok.headers["x-ratelimit-limit-requests"] == "60"


def test_tpm_and_rpm_are_charged_together_or_not_at_all() -> None:
    clock = FakeClock(1000.0)
    limits = RateLimits(rpm=10, tpm=1000, clock=clock)
    assert limits.admit(900).allowed
    denied = limits.admit(200)  # tokens short, requests fine
    assert not denied.allowed
    assert denied.limited_by == "tokens"
    # the denied request took no request slot: 9 more fit
    for _ in range(9):
        assert limits.admit(0).allowed
    assert not limits.admit(0).allowed


def test_request_larger_than_the_bucket_is_flagged_too_large() -> None:
    limits = RateLimits(rpm=None, tpm=100, clock=FakeClock(1000.0))
    decision = limits.admit(101)
    assert not decision.allowed
    assert decision.too_large
    assert "retry-after" not in decision.headers


def test_remaining_and_reset_headers_track_the_bucket() -> None:
    clock = FakeClock(1000.0)
    limits = RateLimits(rpm=None, tpm=6000, clock=clock)
    decision = limits.admit(3000)
    assert decision.headers["x-ratelimit-remaining-tokens"] == "3000"
    assert decision.headers["x-ratelimit-reset-tokens"] == "30s"  # 100 tokens/s to refill 3000
    clock.now += 10
    assert limits.admit(0).headers["x-ratelimit-remaining-tokens"] == "4000"


def test_limit_window_makes_a_per_minute_limit_bind_per_second() -> None:
    clock = FakeClock(1000.0)
    limits = RateLimits(rpm=600, tpm=None, clock=clock, window_s=1.0)
    assert [limits.admit(1).allowed for _ in range(11)] == [True] * 10 + [False]
    clock.now += 0.1
    assert limits.admit(1).allowed


def test_fixed_windows_reset_at_each_windows_end() -> None:
    """Azure-style: 600 RPM over 10 s windows is 100 requests per window, counted afresh at
    each window's start, whatever was used a moment before the boundary."""
    clock = FakeClock(1000.0)  # a window boundary
    limits = RateLimits(600, None, clock, 10.0, style="fixed_window")
    assert sum(limits.admit(0).allowed for _ in range(150)) == 100
    clock.now = 1009.5
    refused = limits.admit(0)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(0.5)  # until the window ends
    clock.now = 1010.0
    assert sum(limits.admit(0).allowed for _ in range(150)) == 100


def test_header_styles_of_the_servers_a_client_meets() -> None:
    clock = FakeClock(1000.0)
    azure = RateLimits(600, 60_000, clock, 10.0, style="fixed_window", headers="azure")
    headers = azure.admit(10).headers
    assert "x-ratelimit-limit-requests" not in headers  # Azure does not say the limit
    assert headers["x-ratelimit-remaining-requests"] == "99"
    assert headers["x-ratelimit-reset-requests"] == "10"  # integer seconds
    for _ in range(99):
        azure.admit(10)
    refused = azure.admit(10)
    assert refused.headers["retry-after"] == "10"
    assert "retry-after-ms" not in refused.headers
    silent = RateLimits(60, None, clock, 1.0, headers="none", retry_after=False)
    assert silent.admit(0).headers == {}
    assert silent.admit(0).headers == {}  # refused, and not a word about why or for how long
    liar = RateLimits(60, None, clock, 1.0, lying=True)
    assert liar.admit(0).headers["x-ratelimit-remaining-requests"] == str(-(10**9))
    assert liar.admit(0).headers["retry-after"] == "100000"


def test_announced_limits_are_sent_in_place_of_the_enforced_ones() -> None:
    """``announced_rpm``: an organisation's limit in the headers while a project's lower one
    applies; remaining is the announced limit less what the window used."""
    clock = FakeClock(1000.0)
    org = RateLimits(60, 1000, clock, 1.0, announced=(10**9, None))
    headers = org.admit(10).headers
    assert headers["x-ratelimit-limit-requests"] == str(10**9)
    assert headers["x-ratelimit-remaining-requests"] == str(10**9 - 1)
    assert headers["x-ratelimit-limit-tokens"] == "1000"  # not announced otherwise: the truth
    assert not org.admit(10).allowed  # still one a second enforced
