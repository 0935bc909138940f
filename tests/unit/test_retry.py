"""The tenacity retry policy: what is retried, how long it waits, when it stops (no real sleeps)."""

from __future__ import annotations

import httpx2
import openai
import pytest

from rat_langchain.config import RetriesConfig
from rat_langchain.errors import ApiKeyError
from rat_langchain.guards.breaker import CircuitOpenError, State
from rat_langchain.guards.classify import explain, is_retryable
from rat_langchain.guards.retry import RetryPolicy, server_wait
from tests.support.openai_errors import status_error


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    assert is_retryable(status_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_caller_errors_are_never_retried(status: int) -> None:
    assert not is_retryable(status_error(status))


def test_other_retry_decisions() -> None:
    request = httpx2.Request("GET", "http://sim")
    assert is_retryable(openai.APITimeoutError(request))
    assert is_retryable(openai.APIConnectionError(request=request))
    assert is_retryable(TimeoutError())
    assert not is_retryable(status_error(429, body={"error": {"code": "insufficient_quota"}}))
    assert not is_retryable(CircuitOpenError("x", State.OPEN, 1.0, 1.0))
    assert not is_retryable(ValueError("bad"))


def test_server_wait_prefers_retry_after_ms() -> None:
    assert server_wait(status_error(429, {"retry-after-ms": "1500", "retry-after": "2"})) == 1.5
    assert server_wait(status_error(503, {"retry-after": "3"})) == 3.0
    assert server_wait(status_error(500)) is None
    assert server_wait(TimeoutError()) is None


def test_auth_errors_become_a_clear_key_error_without_the_key() -> None:
    error = explain(status_error(401), "http://sim/v1")
    assert isinstance(error, ApiKeyError)
    assert "OPENAI_API_KEY" in str(error)
    assert "401" in str(error)
    assert isinstance(explain(status_error(403)), ApiKeyError)
    other = status_error(500)
    assert explain(other) is other


async def _run(
    policy: RetryPolicy, failures: list[BaseException], **kwargs: object
) -> tuple[int, list[float]]:
    sleeps: list[float] = []
    attempts = 0

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async for attempt in policy.retrying(sleep=fake_sleep, **kwargs):  # type: ignore[arg-type]
        with attempt:
            attempts += 1
            if failures:
                raise failures.pop(0)
    return attempts, sleeps


async def test_retry_after_wins_over_backoff_and_is_capped() -> None:
    policy = RetryPolicy(
        max_attempts=4, initial_backoff_s=0.5, max_backoff_s=8, max_server_wait_s=5
    )
    attempts, sleeps = await _run(
        policy,
        [
            status_error(429, {"retry-after-ms": "1200"}),
            status_error(503, {"retry-after": "30"}),
            status_error(500),
        ],
    )
    assert attempts == 4
    assert sleeps[:2] == [1.2, 5.0]
    assert 0 <= sleeps[2] <= 8  # full jitter: anywhere from 0 to the exponential cap


async def test_stops_after_max_attempts_and_reraises_the_laststatus_error() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01)
    with pytest.raises(openai.InternalServerError):
        await _run(policy, [status_error(500)] * 5)


async def test_non_retryable_error_is_raised_at_once() -> None:
    failures: list[BaseException] = [status_error(400), status_error(500)]
    with pytest.raises(openai.APIStatusError) as info:
        await _run(RetryPolicy(), failures)
    assert info.value.status_code == 400
    assert len(failures) == 1  # the 500 was never reached


async def test_stops_before_a_sleep_would_cross_the_deadline() -> None:
    policy = RetryPolicy(max_attempts=10, max_server_wait_s=60)
    with pytest.raises(openai.RateLimitError):
        await _run(policy, [status_error(429, {"retry-after": "5"})] * 3, deadline_s=2.0)


def test_from_config_respects_enabled_flag() -> None:
    assert RetryPolicy.from_config(RetriesConfig(enabled=False)).max_attempts == 1
    assert RetryPolicy.from_config(RetriesConfig(max_attempts=6)).max_attempts == 6
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_a_429_a_limiter_holds_is_retried_without_a_backoff_of_its_own() -> None:
    """The limiter saw a 429 without a retry-after and holds the key (``held``): it, not a
    second backoff on top, decides when the retry goes. Without a limiter the backoff applies,
    a server's retry-after is honoured as ever, and a hold past the deadline, or the last
    attempt, ends the call."""
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=30.0, max_backoff_s=60.0)
    refused = status_error(429)
    assert policy.next_wait(refused, 1, None, held=0.4) == 0.0
    assert policy.next_wait(refused, 2, 10.0, held=0.0) == 0.0
    assert policy.next_wait(refused, 1, 2.0, held=5.0) is None  # the hold crosses the deadline
    assert policy.next_wait(refused, 3, None, held=0.4) is None  # attempts spent
    unheld = [policy.next_wait(refused, 2, None) for _ in range(20)]
    assert all(w is not None and 0.0 <= w <= 60.0 for w in unheld)
    assert max(w for w in unheld if w is not None) > 1.0  # the backoff, as before
    assert policy.next_wait(status_error(400), 1, None, held=0.4) is None  # still not retried
    asked = status_error(429, {"retry-after-ms": "1500"})  # the server's word still wins
    assert policy.next_wait(asked, 1, None, held=0.0) == 1.5


def test_429s_a_limiter_holds_are_retried_past_max_attempts_for_one_server_wait() -> None:
    """A bulk embedding against a silent token limit had requests refused four times in a
    row while the limiter learned the rate, and the whole call failed. 429s a limiter holds
    go on being retried past max_attempts for up to max_server_wait_s from the call's first;
    nothing else does: a 500, an unheld 429, a held one past that minute, or the deadline."""
    policy = RetryPolicy(max_attempts=3, max_server_wait_s=60.0)
    refused = status_error(429)
    assert policy.next_wait(refused, 3, None, held=0.4, throttled_s=5.0) == 0.0
    assert policy.next_wait(refused, 9, None, held=0.4, throttled_s=59.0) == 0.0
    assert policy.next_wait(refused, 9, None, held=0.4, throttled_s=60.0) is None  # a minute
    assert policy.next_wait(refused, 3, None, held=0.4) is None  # not held before: counted
    assert policy.next_wait(refused, 3, None, throttled_s=5.0) is None  # no limiter: counted
    assert policy.next_wait(status_error(500), 3, None, held=0.4, throttled_s=5.0) is None
    assert policy.next_wait(refused, 3, 0.2, held=0.4, throttled_s=5.0) is None  # deadline
    asked = status_error(429, {"retry-after": "30"})  # the server's wait counts in the minute
    assert policy.next_wait(asked, 3, None, held=0.0, throttled_s=20.0) == 30.0
    assert policy.next_wait(asked, 3, None, held=0.0, throttled_s=40.0) is None
