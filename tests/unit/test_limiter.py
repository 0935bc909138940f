"""RateLimiter logic on a fake clock and fake timers: no sleeping, fully deterministic."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from rat_langchain.config import RateLimitingConfig, RetriesConfig
from rat_langchain.errors import RequestTooLarge
from rat_langchain.guards.bucket import RateLimit, TokenBucket
from rat_langchain.guards.headers import parse_duration, retry_after_seconds
from rat_langchain.guards.key import Key
from rat_langchain.guards.limiter import RateLimiter
from tests.support.clock import FakeClock, settle

KEY = ("http://sim/v1", "gpt-4o-mini")


def limiter(clock: FakeClock, **kwargs: object) -> RateLimiter:
    kwargs.setdefault("safety_margin", 1.0)
    kwargs.setdefault("first_hold_s", 0.0)  # the first burst's hold has tests of its own
    kwargs.setdefault("burst_s", 60.0)  # a minute's burst unless a test says otherwise
    return RateLimiter(clock=clock, call_later=clock.call_later, **kwargs)  # type: ignore[arg-type]


def test_bucket_refills_continuously_and_starts_full() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, clock, burst_s=60.0)
    assert bucket.level() == 60
    bucket.take(60)
    assert bucket.wait_for(1) == pytest.approx(1.0)
    clock.now = 0.5
    assert bucket.level() == pytest.approx(0.5)
    bucket.give(1000)
    assert bucket.level() == 60  # never above capacity


async def test_burst_then_fifo_waiters_are_woken_by_one_timer_without_polling() -> None:
    clock = FakeClock()
    rl = limiter(clock, rpm=60, tpm=None)
    for _ in range(60):
        await rl.acquire(KEY)
    order: list[int] = []

    async def waiter(i: int) -> None:
        await rl.acquire(KEY)
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await settle()
    assert order == []
    assert clock.pending == 1  # one timer for the head, nothing polls
    await clock.advance(1.0)
    assert order == [0]
    await clock.advance(2.0)
    assert order == [0, 1, 2]
    await asyncio.gather(*tasks)
    assert rl.stats["waited"] == 3


async def test_large_request_is_not_starved_by_small_ones() -> None:
    clock = FakeClock()
    rl = limiter(clock, rpm=None, tpm=600)  # 10 tokens per second
    await rl.acquire(KEY, tokens=600)
    done: list[str] = []

    async def ask(name: str, tokens: int) -> None:
        await rl.acquire(KEY, tokens=tokens)
        done.append(name)

    big = asyncio.create_task(ask("big", 500))
    await settle()
    small = [asyncio.create_task(ask(f"small{i}", 10)) for i in range(5)]
    await settle()
    await clock.advance(10)  # 100 tokens back: enough for the small ones, not for big
    assert done == []  # FIFO: nobody overtakes the large request at the head
    await clock.advance(40)
    assert done == ["big"]
    await clock.advance(5)
    assert done[:3] == ["big", "small0", "small1"]
    await clock.advance(10)
    await asyncio.gather(big, *small)
    assert done == ["big"] + [f"small{i}" for i in range(5)]


async def test_request_larger_than_capacity_fails_at_once() -> None:
    rl = limiter(FakeClock(), rpm=None, tpm=1000, safety_margin=0.9)
    with pytest.raises(RequestTooLarge, match=r"900 = tpm_limit x safety_margin"):
        await rl.acquire(KEY, tokens=901)
    assert rl.stats["too_large"] == 1
    with pytest.raises(ValueError, match="tokens must be >= 0"):
        await rl.acquire(KEY, tokens=-1)


async def test_cancelling_50_waiters_returns_their_capacity() -> None:
    clock = FakeClock()
    rl = limiter(clock, rpm=60, tpm=None)
    for _ in range(60):
        await rl.acquire(KEY)
    waiting = [asyncio.create_task(rl.acquire(KEY)) for _ in range(50)]
    await settle()
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    late = asyncio.create_task(rl.acquire(KEY))
    await settle()
    await clock.advance(1.0)  # one second refills one request: the next caller is not delayed
    assert late.done()
    assert all(t.cancelled() for t in waiting)


async def test_granted_then_cancelled_waiter_gives_back() -> None:
    clock = FakeClock()
    rl = limiter(clock, rpm=60, tpm=None)
    for _ in range(60):
        await rl.acquire(KEY)
    task = asyncio.create_task(rl.acquire(KEY))
    await settle()
    clock.now += 1.0
    rl._wake(KEY, asyncio.get_running_loop())  # grant the head...
    task.cancel()  # ...and cancel it before it resumes
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rl.try_acquire(KEY) is not None  # the granted slot came back


async def test_reconcile_returns_unused_tokens_and_charges_overuse() -> None:
    clock = FakeClock()
    rl = limiter(clock, rpm=None, tpm=1000)
    reservation = await rl.acquire(KEY, tokens=800)
    assert rl.try_acquire(KEY, tokens=300) is None
    reservation.reconcile(100)  # 700 unused tokens go back
    assert rl.try_acquire(KEY, tokens=800) is not None
    over = await asyncio.wait_for(rl.acquire(KEY, tokens=0), 1)
    over.reconcile(150)  # used more than reserved: the debt is charged
    assert rl._state(KEY).tokens is not None
    assert rl._state(KEY).tokens.level() == pytest.approx(1000 - 100 - 800 - 150)


async def test_release_gives_back_request_and_tokens() -> None:
    rl = limiter(FakeClock(), rpm=1, tpm=100)
    reservation = await rl.acquire(KEY, tokens=100)
    assert rl.try_acquire(KEY) is None
    reservation.release()
    assert rl.try_acquire(KEY, tokens=100) is not None


async def test_headers_tighten_but_never_loosen() -> None:
    clock = FakeClock()
    rl = limiter(clock, rpm=600, tpm=100_000, safety_margin=0.9)
    rl.observe(KEY, {"x-ratelimit-remaining-requests": "3", "X-RateLimit-Limit-Tokens": "50000"})
    state = rl._state(KEY)
    assert state.requests is not None
    assert state.tokens is not None
    assert state.requests.level() == pytest.approx(3)
    assert state.tokens.capacity == pytest.approx(45_000)  # the server's lower limit x margin
    rl.observe(KEY, {"x-ratelimit-remaining-requests": "500", "x-ratelimit-limit-tokens": "900000"})
    assert state.requests.level() == pytest.approx(3)
    assert state.tokens.capacity == pytest.approx(45_000)


async def test_429_pauses_the_key_for_retry_after() -> None:
    clock = FakeClock()
    rl = limiter(clock, rpm=600, tpm=None)
    pause = rl.observe_429(KEY, {"retry-after-ms": "2500", "retry-after": "3"})
    assert pause == 2.5
    task = asyncio.create_task(rl.acquire(KEY))
    await settle()
    await clock.advance(2.4)
    assert not task.done()
    await clock.advance(0.1)
    assert task.done()
    assert rl.observe_429(("other", "m"), {"x-ratelimit-reset-requests": "1.5s"}) == 1.5
    other_key = ("other", "x")  # nothing said of when: a backoff (tests/unit/test_learn.py)
    assert 0.25 <= rl.observe_429(other_key, {}) <= 0.5


def test_duration_and_retry_after_parsing() -> None:
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("6m0s") == 360
    assert parse_duration("1h2m") == 3720
    assert parse_duration("7") == 7
    assert parse_duration("soon") is None
    assert retry_after_seconds({"Retry-After": "4"}) == 4
    # an HTTP date (RFC 9110), measured against the wall clock; a date in the past is no wait
    date = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}
    assert retry_after_seconds(date) == 0.0
    then = 1445412450.0  # 30 s before that date
    assert retry_after_seconds(date, now=lambda: then) == pytest.approx(30.0)
    assert retry_after_seconds({"retry-after": "not a date"}) is None
    assert retry_after_seconds({}) is None


def test_azure_and_project_headers() -> None:
    """Azure sends integer seconds; OpenAI may add project-level token limits: the tighter
    of the two binds."""
    from rat_langchain.guards.headers import announced

    azure = {"x-ratelimit-remaining-requests": "9", "x-ratelimit-reset-requests": "10"}
    assert announced(azure, "requests").remaining == 9
    assert announced(azure, "requests").reset_s == 10
    both = {
        "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-limit-project-tokens": "50000",
        "x-ratelimit-remaining-tokens": "150000",
        "x-ratelimit-remaining-project-tokens": "40000",
        "x-ratelimit-reset-project-tokens": "6m0s",
    }
    told = announced(both, "tokens")
    assert (told.limit, told.remaining, told.reset_s) == (50000, 40000, 360)
    clock = FakeClock()
    rl = limiter(clock, rpm=None, tpm=1_000_000)
    rl.observe(KEY, both)
    state = rl.feedback.known(Key.of(KEY))
    assert state.tokens is not None
    assert state.tokens.per_minute == 50000  # the project's limit, not the key's
    assert state.tokens.level() <= 40000


def test_per_model_limits_from_config() -> None:
    config = RateLimitingConfig.model_validate(
        {"rpm_limit": 100, "tpm_limit": 1000, "per_model": {"gpt-4o": {"rpm_limit": 5}}}
    )
    rl = RateLimiter.from_config(config)
    assert rl.limit_for(("api", "gpt-4o")) == RateLimit(5, 1000, 0.9)
    assert rl.limit_for("gpt-4o-mini") == RateLimit(100, 1000, 0.9)
    with pytest.raises(ValueError, match=r"RateLimit\.rpm"):
        RateLimit(rpm=0)


async def test_langchain_adapter_sync_and_async() -> None:
    clock = FakeClock()
    rl = limiter(clock, rpm=2, tpm=None)
    adapter = rl.as_langchain(KEY)
    assert adapter.acquire(blocking=False)
    assert await adapter.aacquire(blocking=False)
    assert not adapter.acquire(blocking=False)
    assert not await adapter.aacquire(blocking=False)
    assert "tokens_per_request=0" in repr(adapter)


async def test_concurrency_semaphore_is_per_loop_and_bounded() -> None:
    rl = RateLimiter(max_concurrency=3)
    sem = rl.semaphore()
    assert sem is not None
    assert sem is rl.semaphore()
    assert RateLimiter().semaphore() is None


async def test_burst_window_bounds_the_burst_and_big_requests_borrow() -> None:
    clock = FakeClock()
    rl = limiter(clock, rpm=600, tpm=6000, burst_s=1.0)  # 10 requests and 100 tokens per second
    for _ in range(10):
        assert rl.try_acquire(KEY) is not None
    assert rl.try_acquire(KEY) is None  # the burst is one second's worth, not a minute's
    clock.now += 1.0
    big = await rl.acquire(KEY, tokens=250)  # larger than a burst: waits for a full bucket...
    assert big.tokens == 250
    state = rl._state(KEY)
    assert state.tokens is not None
    assert state.tokens.level() == pytest.approx(-150)  # ...and pays the rest as debt
    assert state.wait_time(1) == pytest.approx(1.51)
    with pytest.raises(RequestTooLarge):
        await rl.acquire(KEY, tokens=6001)  # more than a minute's worth can never be served


async def test_first_burst_is_held_until_the_server_answers() -> None:
    clock = FakeClock()
    rl = limiter(clock, rpm=600, tpm=None, burst_s=1.0, first_hold_s=5.0)  # 10 per second
    for _ in range(10):
        await rl.acquire(KEY)
    late = asyncio.create_task(rl.acquire(KEY))
    await clock.advance(1.0)
    assert not late.done()  # no refill lands on top of a burst the server has not seen yet
    rl.acknowledge(KEY)  # the first answer came back
    await settle()
    await clock.advance(0.1)  # refill runs from the answer on: one request per 0.1 s
    assert late.done()
    rl.acknowledge(KEY)  # later answers change nothing
    assert rl.try_acquire(KEY) is None


async def test_the_hold_ends_by_itself_when_no_answer_comes() -> None:
    clock = FakeClock()
    rl = limiter(clock, rpm=600, tpm=None, burst_s=1.0, first_hold_s=0.5)
    for _ in range(10):
        await rl.acquire(KEY)
    late = asyncio.create_task(rl.acquire(KEY))
    await clock.advance(0.55)
    assert not late.done()
    await clock.advance(0.1)
    assert late.done()  # 0.5 s of hold (never more than one burst window), then 0.1 s of refill


async def test_backpressure_rejects_at_once_when_the_queue_is_full_or_too_slow() -> None:
    from rat_langchain.guards.limiter import BackpressureError

    fake = FakeClock()
    limiter = RateLimiter(
        rpm=60,
        tpm=None,
        safety_margin=1.0,
        burst_s=1,
        max_queue=2,
        first_hold_s=0.0,
        clock=fake,
        call_later=fake.call_later,
    )  # one request per second, bucket of one
    await limiter.acquire(KEY)  # takes the bucket
    waiting = [asyncio.create_task(limiter.acquire(KEY)) for _ in range(2)]
    await settle()
    with pytest.raises(BackpressureError, match="is full") as caught:
        await limiter.acquire(KEY)  # a third waiter: refused without waiting
    assert caught.value.queued == 2
    assert limiter.stats["rejected"] == 1
    await fake.advance(2.0)
    assert all(t.done() for t in waiting)  # the queued ones were served, not dropped

    timed = RateLimiter(
        rpm=60,
        tpm=6000,
        safety_margin=1.0,
        burst_s=1,
        max_queue_wait_s=3.0,
        first_hold_s=0.0,
        clock=fake,
        call_later=fake.call_later,
    )
    await timed.acquire(KEY, tokens=100)  # empties both buckets (1 request, 100 tokens)
    second = asyncio.create_task(timed.acquire(KEY, tokens=100))  # ~1 s away: queued
    await settle()
    with pytest.raises(BackpressureError, match="too long") as slow:
        await timed.acquire(KEY, tokens=250)  # behind 100 tokens, 350 missing at 100/s
    assert slow.value.expected_wait_s == pytest.approx(3.5)
    third = asyncio.create_task(timed.acquire(KEY, tokens=50))  # 2.5 s expected: accepted
    await fake.advance(5.0)
    assert second.done()
    assert third.done()
    blocking = RateLimiter(
        rpm=60, tpm=None, burst_s=1, max_queue_wait_s=0.5, first_hold_s=0.0, clock=fake
    )
    adapter = blocking.as_langchain(KEY)  # its sync acquire waits on the portal loop
    assert adapter.acquire()  # takes the bucket
    with pytest.raises(BackpressureError, match="too long"):
        adapter.acquire()  # 1 s away: refused instead of sleeping


def test_backpressure_settings_come_from_config() -> None:
    config = RateLimitingConfig(max_queue=7, max_queue_wait_s=2.5)
    limiter = RateLimiter.from_config(config)
    assert limiter.max_queue == 7
    assert limiter.max_queue_wait_s == 2.5


async def test_a_token_bound_load_is_served_at_the_margin_with_nothing_left_idle() -> None:
    """The logic behind "tokens served reach >= 90% of the limit": 100 callers at a time, prompts
    of 50-600 tokens reserved with max_tokens and reconciled with what was used, 20 ms calls. Over
    20 fake seconds the limiter grants the burst plus margin x limit, less at most one request:
    a waiter is woken the instant its tokens are there, and returned tokens are reused."""
    clock = FakeClock()
    tpm, margin, window = 300_000, 0.9, 1.0
    rl = limiter(clock, rpm=None, tpm=tpm, safety_margin=margin, burst_s=window)
    used = 0
    sizes = itertools.cycle(50 + (i * 37) % 550 for i in range(150))
    stop = 20.0

    async def call(prompt: int) -> None:
        nonlocal used
        reservation = await rl.acquire(KEY, tokens=prompt + 50)  # max_tokens=50 reserved
        done = asyncio.get_running_loop().create_future()
        clock.call_later(0.02, lambda: done.set_result(None))
        await done
        reservation.reconcile(prompt + 20)  # the answer used 20 of its 50
        used += prompt + 20

    async def caller() -> None:
        while clock.now < stop:
            await call(next(sizes))

    tasks = [asyncio.create_task(caller()) for _ in range(100)]
    while clock.now < stop:
        await clock.advance(0.01)
    burst = tpm * margin / 60 * window
    steady = tpm * margin / 60 * stop
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert used <= burst + steady + 650  # never more than the margin lets through
    assert used >= 0.99 * (burst + steady) - 650  # and nothing left on the table
    assert (used - burst) / (tpm / 60 * stop) >= margin - 0.01  # steady state: 90% of the limit


def test_no_server_header_holds_a_key_longer_than_max_server_wait() -> None:
    """Headers are untrusted: a Retry-After of 100000 s or a remaining of -10^9 must not stall
    every later call of the key (they paused it for 28 hours, or 133 million seconds)."""
    clock = FakeClock()
    rl = limiter(clock, rpm=600, tpm=100_000, max_pause_s=60.0)
    assert rl.observe_429(KEY, {"retry-after": "100000"}) == 60.0
    assert rl.observe_429(KEY, {"retry-after-ms": "1e12"}) == 60.0
    assert rl.observe_429(KEY, {"x-ratelimit-reset-requests": "9999h"}) == 60.0
    state = rl.feedback.known(Key.of(KEY))
    assert state.wait_time(1) <= 60.0
    rl.observe(
        KEY,
        {"x-ratelimit-remaining-requests": "-1000000000", "x-ratelimit-remaining-tokens": "-1e9"},
    )
    assert state.requests is not None
    assert state.requests.level() >= 0
    assert state.tokens is not None
    assert state.tokens.level() >= 0
    clock.now += 60.0  # the pause is over: the key waits no longer than a refill
    assert state.wait_time(100) <= 0.1
    for garbage in ("nan", "inf", "-inf", "soon", "", "1e309"):
        rl.observe(KEY, {"x-ratelimit-remaining-tokens": garbage, "retry-after": garbage})
    assert state.wait_time(100) <= 0.1
    assert RateLimiter().max_pause_s == RetriesConfig().max_server_wait_s


def test_auto_limits_follow_the_server_up_and_down_and_numbers_are_ceilings() -> None:
    """rpm_limit/tpm_limit: auto (the default) start at 500 / 200k and take the server's
    x-ratelimit-limit-*, higher or lower; a number the user set can only be lowered."""
    from rat_langchain.guards.limiter import START_RPM, START_TPM

    clock = FakeClock()
    learned = RateLimiter(safety_margin=0.9, clock=clock, call_later=clock.call_later)
    state = learned._state(Key.of(KEY))
    assert state.requests is not None
    assert state.tokens is not None
    assert state.requests.per_minute == pytest.approx(START_RPM * 0.9)
    assert state.tokens.per_minute == pytest.approx(START_TPM * 0.9)
    learned.observe(KEY, {"x-ratelimit-limit-requests": "10000", "x-ratelimit-limit-tokens": "2e6"})
    assert state.requests.per_minute == pytest.approx(9000)  # raised to the server's
    assert state.tokens.per_minute == pytest.approx(1_800_000)
    lowered = {"x-ratelimit-limit-requests": "10000", "x-ratelimit-limit-tokens": "1000000"}
    learned.observe(KEY, lowered)  # Azure lowers the token limit at times
    assert state.tokens.per_minute == pytest.approx(900_000)
    before = state.requests.level()
    learned.observe(KEY, {**lowered, "x-ratelimit-limit-requests": "60000"})
    assert state.requests.level() <= before + 1e-9  # raising adds no burst at once
    assert learned.try_acquire(KEY, tokens=1_500_000) is None  # over the learned limit: waits
    ceiling = RateLimiter(rpm=600, tpm="auto", safety_margin=0.9, clock=clock)
    capped = ceiling._state(Key.of(KEY))
    assert capped.requests is not None
    ceiling.observe(KEY, {"x-ratelimit-limit-requests": "10000"})
    assert capped.requests.per_minute == pytest.approx(540)  # the user's number holds
    ceiling.observe(KEY, {"x-ratelimit-limit-requests": "100"})
    assert capped.requests.per_minute == pytest.approx(90)  # ... and the server may lower it


def test_auto_in_the_config() -> None:
    config = RateLimitingConfig.model_validate(
        {
            "rpm_limit": 600,
            "per_model": {"gpt-4o": {"tpm_limit": 5000}, "o1": {"rpm_limit": "auto"}},
        }
    )
    rl = RateLimiter.from_config(config)
    assert rl.default.rpm == 600
    assert not rl.default.learn_rpm
    assert rl.default.learn_tpm  # not set: auto
    assert not rl.limit_for(("x", "gpt-4o")).learn_tpm
    assert rl.limit_for(("x", "o1")).learn_rpm
    from rat_langchain import RatConfig

    env = {"RAT_PERFORMANCE__RATE_LIMITING__TPM_LIMIT": "auto"}
    assert RatConfig.from_dict({}, env=env).performance.rate_limiting.tpm_limit == "auto"


def test_a_learned_dimension_the_server_does_not_announce_is_not_limited() -> None:
    """A server that sends its token limit and nothing about requests has no request limit:
    keeping the starting 500 RPM would cap a token-limited server at half its speed."""
    clock = FakeClock()
    learned = RateLimiter(clock=clock)
    learned.observe(
        KEY, {"x-ratelimit-limit-tokens": "300000", "x-ratelimit-remaining-tokens": "1"}
    )
    state = learned.feedback.known(Key.of(KEY))
    assert state.requests is None
    assert state.tokens is not None
    azure = RateLimiter(clock=clock)
    azure.observe(KEY, {"x-ratelimit-remaining-requests": "9"})  # no limit header at all
    assert azure.feedback.known(Key.of(KEY)).requests is not None  # nothing announced: kept
    ceiling = RateLimiter(rpm=600, clock=clock)
    ceiling.observe(KEY, {"x-ratelimit-limit-tokens": "300000"})
    assert ceiling.feedback.known(Key.of(KEY)).requests is not None  # the user's number stays
