"""The local limiter's default for limits left on "auto": a server that has never refused is not
throttled by a rate; a slow-starting window of attempts in flight bounds the key (from ten,
+1 per answer while used, doubling at least every PACE_S while callers wait); the first 429
closes the key at what the server accepted; announced limits are believed. Fake clock."""

from __future__ import annotations

import asyncio

import pytest

from rat_langchain.guards.key import Key
from rat_langchain.guards.learn import (
    FIRST_PACE_S,
    FIRST_WAIT_S,
    INITIAL_WINDOW,
    PACE_S,
    WINDOW_BETA,
    Concurrency,
)
from rat_langchain.guards.limiter import RateLimiter
from tests.support.clock import FakeClock, settle

KEY = ("http://sim/v1", "m")
SILENT: dict[str, str] = {}


def open_limiter(clock: FakeClock, **kwargs: object) -> RateLimiter:
    kwargs.setdefault("safety_margin", 1.0)
    return RateLimiter(
        "auto",
        kwargs.pop("tpm", "auto"),  # type: ignore[arg-type]
        clock=clock,
        call_later=clock.call_later,
        random=lambda: 1.0,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_server_that_never_refused_is_not_throttled_by_a_rate() -> None:
    clock = FakeClock()
    limiter = open_limiter(clock)
    assert limiter.try_acquire(KEY, tokens=50) is not None
    limiter.observe(KEY, SILENT)  # the first answer, silent
    limiter.acknowledge(KEY)
    granted = sum(limiter.try_acquire(KEY, tokens=50) is not None for _ in range(5000))
    assert granted == 5000  # at one instant: 10x the old 500 RPM start, 250k tokens
    row = limiter.limits()[KEY]
    assert row["requests"]["source"] == "open"
    assert row["tokens"]["source"] == "open"


def test_before_the_first_answer_the_token_rate_bounds_the_first_burst() -> None:
    """A window counts requests, not their size: until the server has answered once, the
    starting token rate holds (a per-second token limit would refuse a burst of long
    prompts); after a silent answer the tokens dimension is open too."""
    clock = FakeClock()
    limiter = open_limiter(clock, first_hold_s=1.0)
    assert limiter.try_acquire(KEY, tokens=3000) is not None
    assert limiter.try_acquire(KEY, tokens=3000) is None  # START_TPM's 1 s burst is spent
    limiter.observe(KEY, SILENT)
    limiter.acknowledge(KEY)
    assert limiter.limits()[KEY]["tokens"]["source"] == "open"
    assert limiter.try_acquire(KEY, tokens=3000) is not None


def test_the_first_429_closes_the_key_at_what_the_server_accepted() -> None:
    clock = FakeClock()
    limiter = open_limiter(clock)
    for i in range(30):  # 30 sent in 0.3 s, 10 of them answered (a 10-per-second server)
        clock.now += 0.01
        assert limiter.try_acquire(KEY, tokens=100) is not None
        if i < 10:
            limiter.observe(KEY, SILENT)
            limiter.acknowledge(KEY)
    limiter.observe_429(KEY, SILENT)  # 30 sent in the second, one refused so far
    row = limiter.limits()[KEY]
    assert row["requests"]["source"] == "cubic"
    assert row["requests"]["per_minute"] == pytest.approx(29 * 60.0)
    for _ in range(19):  # the rest of the burst: sent before the pause, refused
        limiter.observe_429(KEY, SILENT)
    row = limiter.limits()[KEY]
    assert row["requests"]["per_minute"] == pytest.approx(600.0)  # 30 sent, 20 refused
    assert row["tokens"]["per_minute"] == pytest.approx(60_000.0)  # their tokens, per minute
    # the window stepped down too (a silent server may count requests in flight)
    assert row["concurrency_limit"] is not None
    clock.now += 1.0  # past the pause (0.5 s, no retry-after): the bucket refilled from empty
    granted = sum(limiter.try_acquire(KEY, tokens=100) is not None for _ in range(50))
    assert granted == 10  # one second at 600 RPM: the rate applies now


def test_a_429_before_any_answer_steps_the_window_down_and_leaves_the_rate_open() -> None:
    """A server that counts requests in flight refuses at once and answers later: a refusal
    with nothing answered says nothing of a rate (closing at what was sent would throttle a
    40-per-second server to 7); the window learns it, the burst's refusals included."""
    clock = FakeClock()
    limiter = open_limiter(clock, tpm=None)
    held = [limiter.gate(KEY) for _ in range(INITIAL_WINDOW)]
    for _ in held:
        assert limiter.try_acquire(KEY) is not None
    state = limiter.feedback.state(Key.of(KEY))
    state.in_flight = INITIAL_WINDOW  # ten out, as the gate counts them
    limiter.observe_429(KEY, SILENT)
    row = limiter.limits()[KEY]
    assert row["requests"]["source"] == "start"  # open, not answered yet
    assert row["concurrency_limit"] == pytest.approx(WINDOW_BETA * INITIAL_WINDOW)
    for _ in range(3):  # the same burst (sent before the pause): 10 out, 4 refused
        limiter.observe_429(KEY, SILENT)
    assert limiter.limits()[KEY]["concurrency_limit"] == pytest.approx(INITIAL_WINDOW - 4)
    assert limiter.try_acquire(KEY) is None  # paused (0.5 s, no retry-after)
    clock.now += 0.5
    assert sum(limiter.try_acquire(KEY) is not None for _ in range(100)) == 100  # no rate


def test_per_minute_reports_only_the_rates_that_limit_sends() -> None:
    """An open dimension's starting value is no limit the server set: ``per_minute`` says
    None for it (embedding requests sized by 450 RPM sent 20,000 texts as 200 requests where
    OpenAIEmbeddings sends 20); before the first answer the token rate binds and is reported;
    an announced limit is."""
    clock = FakeClock()
    limiter = open_limiter(clock)
    assert limiter.per_minute(KEY) == (None, limiter.limits()[KEY]["tokens"]["per_minute"])
    limiter.try_acquire(KEY, tokens=10)
    limiter.observe(KEY, SILENT)
    limiter.acknowledge(KEY)
    assert limiter.per_minute(KEY) == (None, None)  # both open after a silent answer
    limiter.observe(
        KEY, {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "599"}
    )
    assert limiter.per_minute(KEY)[0] == 600


def test_announced_limits_are_believed_and_end_the_window() -> None:
    clock = FakeClock()
    limiter = open_limiter(clock)
    limiter.try_acquire(KEY)
    headers = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "599",
        "x-ratelimit-limit-tokens": "100000",
        "x-ratelimit-remaining-tokens": "99000",
    }
    limiter.observe(KEY, headers)
    limiter.acknowledge(KEY)
    row = limiter.limits()[KEY]
    assert row["requests"]["source"] == "announced"
    assert row["requests"]["per_minute"] == 600
    assert row["concurrency_limit"] is None  # the rate bounds the key, not a window
    granted = sum(limiter.try_acquire(KEY) is not None for _ in range(50))
    assert granted < 15  # about one second's worth: the announced rate applies


def test_the_window_slow_starts_per_answer_while_used() -> None:
    clock = FakeClock()
    window = Concurrency(1024, initial=INITIAL_WINDOW, clock=clock)
    assert window.admits(INITIAL_WINDOW - 1)
    assert not window.admits(INITIAL_WINDOW)
    for _ in range(10):  # ten answers, each with the window full: +1 each
        window.completed(in_flight=INITIAL_WINDOW)
    assert window.limit == 2 * INITIAL_WINDOW  # doubled in one round of answers
    for _ in range(50):  # one caller at a time: the window is not in use, it does not grow
        window.completed(in_flight=1)
    assert window.limit == 2 * INITIAL_WINDOW
    while window.limit is not None:  # up to the ceiling, where it turns off
        window.completed(in_flight=int(window.limit))
    assert not window.slow_start
    assert window.admits(10_000)


def test_while_callers_wait_the_window_doubles_every_pace_whatever_the_round_trip() -> None:
    clock = FakeClock()
    window = Concurrency(1024, initial=10, clock=clock)
    delay = window.blocked()  # before the first answer: a wait, then the first pace
    assert delay == pytest.approx(FIRST_WAIT_S + FIRST_PACE_S * 0.1375, rel=0.01)
    clock.now += FIRST_WAIT_S
    window.pace()
    assert window.limit == pytest.approx(10)  # a cold client's own first request: no growth
    clock.now += FIRST_PACE_S
    window.pace()
    assert window.limit == pytest.approx(20)
    window.unblocked()
    window.limit = 10.0
    window.completed(in_flight=1)  # the server answered (one at a time: no growth)
    delay = window.blocked()  # the window is full and a caller waits
    assert delay == pytest.approx(PACE_S * 0.1375, rel=0.01)  # log2(11/10) of a pace
    clock.now += PACE_S
    window.pace()
    assert window.limit == pytest.approx(20)
    clock.now += 2 * PACE_S
    window.pace()
    assert window.limit == pytest.approx(80)  # no answer came: the pace alone
    window.unblocked()
    clock.now += 10.0
    window.pace()
    assert window.limit == pytest.approx(80)  # nobody waited: no growth


def test_a_429_ends_slow_start_into_aimd_and_announced_limits_turn_it_off() -> None:
    clock = FakeClock()
    window = Concurrency(1024, initial=10, clock=clock)
    window.completed(in_flight=10)
    window.throttled(in_flight=11, now=clock())
    assert not window.slow_start
    assert window.limit == pytest.approx(WINDOW_BETA * 11)
    window.completed(in_flight=8)  # an answer of the drop's episode: sent before it
    assert window.limit == pytest.approx(WINDOW_BETA * 11)
    clock.now += 1.0
    window.completed(in_flight=8)
    assert window.limit == pytest.approx(WINDOW_BETA * 11 + 1 / (WINDOW_BETA * 11))  # +1/limit now
    assert window.blocked() is None  # no pace out of slow start
    other = Concurrency(1024, initial=10, clock=clock)
    other.announced()
    assert other.limit is None
    assert other.admits(5000)


def test_remaining_without_a_limit_is_a_credit_with_one_probe_when_idle() -> None:
    """Azure reports what is left of its window but not the limit: a slow-starting window
    sends no more than that until an answer says more, and with nothing in flight one
    request goes (its 429 brings the retry-after) instead of a stall."""
    window = Concurrency(1024, initial=10, clock=FakeClock())
    window.heard(5, in_flight=4)  # 5 left, 3 others out that the server may not have counted
    assert window.credit == 2
    assert window.admits(1)
    window.admitted()
    window.admitted()
    assert not window.admits(2)  # the credit is spent, two in flight
    assert window.admits(0)  # nothing in flight: one probe
    window.heard(None, in_flight=1)
    assert window.admits(5)


async def test_the_pace_admits_waiting_callers_without_waiting_for_answers() -> None:
    clock = FakeClock()
    limiter = open_limiter(clock)
    entered = 0
    twenty = asyncio.Event()
    release = asyncio.Event()

    async def attempt() -> None:
        nonlocal entered
        async with limiter.gate(KEY):  # type: ignore[union-attr]
            entered += 1
            if entered == 20:
                twenty.set()
            await release.wait()

    async with limiter.gate(KEY):  # type: ignore[union-attr]
        pass  # the server's first answer: the pace starts after it
    async with asyncio.TaskGroup() as group:
        for _ in range(30):
            group.create_task(attempt())
        await settle()
        assert entered == INITIAL_WINDOW  # the initial window, nobody answered
        clock.now += PACE_S  # one pace later the window has doubled: the timer lets them in
        async with asyncio.timeout(5):
            await twenty.wait()
        assert entered == 20
        release.set()
    row = limiter.limits()[KEY]
    assert row["in_flight"] == 0
    assert row["concurrency_limit"] is not None
    assert row["concurrency_limit"] >= 20


def test_a_bucket_first_used_after_the_first_answer_is_not_held() -> None:
    """The first burst's hold is for a bucket taken before the server answered; a key's
    requests bucket is first used when its limit is announced (after the answer), and was
    then held for first_hold_s with nothing to wait for (a 0.37 s stall in bench_never_slower's
    cold announced row)."""
    clock = FakeClock()
    limiter = open_limiter(clock, tpm=None, first_hold_s=1.0)
    assert limiter.try_acquire(KEY) is not None
    limiter.acknowledge(KEY)  # the attempt ended (the pool reads headers as the body is read)
    limiter.observe(
        KEY, {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "599"}
    )
    clock.now += 0.5  # refilling at 10/s from the moment it was announced
    assert sum(limiter.try_acquire(KEY) is not None for _ in range(50)) == 10


def test_a_later_burst_of_429s_learns_what_the_server_took_of_it() -> None:
    """A silent per-minute bucket (issue 21, item 10): the first burst is accepted whole, so
    the key closes far above the steady rate; the next burst into the spent window is refused
    but for the refill, and its 429s (sent before the pause) bring the rate down to what the
    server took, in one episode instead of one 0.7 step per second."""
    clock = FakeClock()
    limiter = open_limiter(clock, tpm=None)
    for _ in range(600):  # a minute's bucket, spent in half a second
        clock.now += 0.5 / 600
        assert limiter.try_acquire(KEY) is not None
        limiter.observe(KEY, SILENT)
        limiter.acknowledge(KEY)
    for _ in range(10):  # then ten more go, and are refused
        assert limiter.try_acquire(KEY) is not None
    for _ in range(10):
        limiter.observe_429(KEY, SILENT)
    assert rpm_of(limiter) > 30_000  # what the first second looked like
    clock.now += 2.0  # past the pause and the episode
    sent = 0
    while limiter.try_acquire(KEY) is not None and sent < 100:
        sent += 1
    assert sent == 100
    for _ in range(90):  # 10 of them taken (the refill), 90 refused
        limiter.observe_429(KEY, SILENT)
    assert rpm_of(limiter) <= 10 * 60 * 1.1  # 100 sent less 90 refused, per second


def rpm_of(limiter: RateLimiter) -> float:
    row = limiter.limits()[KEY]["requests"]
    assert row is not None
    return float(row["per_minute"])


def test_a_silent_429_with_retry_after_on_a_full_window_pauses_only_the_refused_attempt() -> None:
    """A server counting 16 in flight answers one more with a 429 and ``retry-after: 1``: the
    refused attempt waits its second (the retry policy honours it), but the key is not paused
    for everyone (1 s lost per 429: 240 calls took 7.9 s against plain's 3.5 s); the window,
    stepped down, holds the others back. With nothing full, the key still pauses."""
    clock = FakeClock()
    limiter = open_limiter(clock, tpm=None)
    state = limiter.feedback.state(Key.of(KEY))
    state.in_flight = INITIAL_WINDOW  # the slow-starting window, all of it out
    assert limiter.observe_429(KEY, {"retry-after": "1"}) == 0.0
    assert limiter.pauses() == {}
    assert limiter.limits()[KEY]["concurrency_limit"] == pytest.approx(WINDOW_BETA * INITIAL_WINDOW)
    state.in_flight = 1  # one out of a window of seven: the refusal is not the window's
    clock.now += 10.0
    assert limiter.observe_429(KEY, {"retry-after": "1"}) == 1.0
    assert limiter.pauses()[KEY] == pytest.approx(1.0)


class _Refused(Exception):
    """An attempt's 429, as the gate sees it leave."""


async def _full_window_refused() -> tuple[RateLimiter, list[object]]:
    """An open key, answered once, with 20 attempts admitted through its gate (the window
    grown to 20); the 24th admitted is refused, then the 21st to 23rd: a server that holds 16
    at once (or a spent rate)."""
    clock = FakeClock()
    limiter = open_limiter(clock, tpm=None)
    state = limiter.feedback.state(Key.of(KEY))
    assert state.concurrency is not None
    state.concurrency.limit = 20.0
    gates: list[object] = []
    numbers: list[int] = []

    async def admit() -> None:
        gate = limiter.gate(KEY)
        assert gate is not None
        numbers.append(await gate.__aenter__())
        gates.append(gate)
        assert limiter.try_acquire(KEY) is not None

    for _ in range(20):
        await admit()
    for gate in gates[:4]:  # four answered
        limiter.observe(KEY, SILENT)
        limiter.acknowledge(KEY)
        await gate.__aexit__(None, None, None)  # type: ignore[attr-defined]
    state.concurrency.limit = 20.0  # as it was: the answers grew it (slow start)
    for _ in range(4):
        await admit()
    for i in (23, 20, 21, 22):  # the last admitted first: it was the one over
        limiter.observe_429(KEY, {"retry-after": "1"}, admitted=numbers[i])
        await gates[i].__aexit__(_Refused, _Refused(), None)  # type: ignore[attr-defined]
    return limiter, gates


async def test_refusals_of_a_full_window_step_it_down_and_leave_the_rate_open() -> None:
    """Issue 20: a server counting requests in flight refuses what goes over its count and
    takes the next as soon as one of its own completes. The window steps down to what it took
    at once (20 out, 4 refused: 16) and the rate stays open. Closing it at the first 429 (what
    a cold second sent) held a 16-slot server serving 80 a second to 33, for seconds."""
    limiter, gates = await _full_window_refused()
    row = limiter.limits()[KEY]
    assert row["concurrency_limit"] == pytest.approx(16)
    assert row["requests"]["source"] == "open"
    state = limiter.feedback.state(Key.of(KEY))
    assert state.in_flight == 16
    await gates[4].__aexit__(None, None, None)  # type: ignore[attr-defined]
    gate = limiter.gate(KEY)
    assert gate is not None
    assert await gate.__aenter__() == 25  # let in after the drop, and answered with 16 out
    await gate.__aexit__(None, None, None)
    assert limiter.limits()[KEY]["requests"]["source"] == "open"
    assert state.concurrency is not None
    assert state.concurrency.windowed
    assert sum(limiter.try_acquire(KEY) is not None for _ in range(1000)) == 1000  # no rate


async def test_refusals_after_the_drop_show_a_spent_rate_and_close_it() -> None:
    """The same refusals from a spent rate: after the drop only three attempts go until one is
    answered (a rate refuses them all), and one refused with fewer in flight than the window
    less its overshoot closes the rate at what the first burst showed: 24 sent in the second,
    4 refused, 20 a second."""
    limiter, gates = await _full_window_refused()
    for gate in gates[4:20]:  # the rest of what was in flight answered
        limiter.observe(KEY, SILENT)
        limiter.acknowledge(KEY)
        await gate.__aexit__(None, None, None)  # type: ignore[attr-defined]
    state = limiter.feedback.state(Key.of(KEY))
    assert state.concurrency is not None
    probes = []
    for _ in range(3):
        gate = limiter.gate(KEY)
        assert gate is not None
        probes.append((gate, await gate.__aenter__()))
    assert not state.concurrency.admits(state.in_flight)  # probing: three until an answer
    gate, number = probes[0]
    limiter.observe_429(KEY, {"retry-after": "1"}, admitted=number)
    await gate.__aexit__(_Refused, _Refused(), None)
    row = limiter.limits()[KEY]
    assert row["requests"]["source"] == "cubic"
    assert row["requests"]["per_minute"] == pytest.approx(20 * 60.0)
    for gate, _ in probes[1:]:
        await gate.__aexit__(None, None, None)
