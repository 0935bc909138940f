"""Limits left on "auto" where the server does not announce them, as a limiter that holds a rate
from the start (``open_until_refused=False``: the Redis limiter's shared rates): slow start, a
CUBIC rate driven by 429s, exponential backoff with jitter, Azure's remaining-only headers, and
a burst that grows only when the server shows it allows more. All on a fake clock. The local
limiter's default, a key left open until the server refuses, is in test_open.py."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from rat_langchain.guards.key import Key
from rat_langchain.guards.learn import BETA, CUBIC_K_S, WINDOW_BETA, Learner
from rat_langchain.guards.limiter import START_RPM, RateLimiter
from tests.support.clock import FakeClock

KEY = ("http://sim/v1", "m")
NO_HEADERS: dict[str, str] = {}


def auto(clock: FakeClock, **kwargs: object) -> RateLimiter:
    kwargs.setdefault("first_hold_s", 0.0)
    kwargs.setdefault("safety_margin", 1.0)
    kwargs.setdefault("open_until_refused", False)
    return RateLimiter(
        "auto",  # type: ignore[arg-type]
        kwargs.pop("tpm", None),  # type: ignore[arg-type]
        clock=clock,
        call_later=clock.call_later,
        random=lambda: 1.0,
        **kwargs,  # type: ignore[arg-type]
    )


def rpm(limiter: RateLimiter) -> float:
    row = limiter.limits()[KEY]["requests"]
    assert row is not None
    return float(row["per_minute"])


def send(
    limiter: RateLimiter,
    clock: FakeClock,
    seconds: float,
    per_second: float,
    headers: dict[str, str] | None = None,
) -> int:
    """Offer ``per_second`` requests for ``seconds``; each granted one is answered at once
    with ``headers`` (a success). Returns how many were granted."""
    granted = 0
    step = 1.0 / per_second
    for _ in range(round(seconds * per_second)):
        clock.now += step
        if limiter.try_acquire(KEY) is not None:
            granted += 1
            limiter.observe(KEY, headers or NO_HEADERS)
            limiter.acknowledge(KEY)
    return granted


def test_a_silent_server_gets_a_slow_start_that_doubles_while_the_rate_binds() -> None:
    clock = FakeClock()
    limiter = auto(clock)
    send(limiter, clock, 1.0, 100)  # demand far above the starting rate
    start = rpm(limiter)
    assert START_RPM <= start < 2 * START_RPM
    send(limiter, clock, 3.0, 100)
    assert rpm(limiter) > 2 * start  # grew: ~doubling per second, capped by 2x what was sent
    assert limiter.limits()[KEY]["requests"]["source"] == "slow_start"


def test_an_idle_key_does_not_talk_itself_into_a_higher_rate() -> None:
    clock = FakeClock()
    limiter = auto(clock)
    send(limiter, clock, 5.0, 2)  # 120/min against a 500/min start: never the bottleneck
    assert rpm(limiter) == START_RPM


def test_a_429_drops_to_beta_of_the_send_rate_once_per_episode_then_climbs_back() -> None:
    clock = FakeClock()
    limiter = auto(clock)
    send(limiter, clock, 2.0, 100)
    limiter.observe_429(KEY, NO_HEADERS)
    sending = limiter.limits()[KEY]["requests"]["sending_per_minute"]  # as the 429 came
    dropped = rpm(limiter)
    assert dropped == pytest.approx(BETA * sending)
    limiter.observe_429(KEY, NO_HEADERS)  # same episode: in flight when the first came back
    assert rpm(limiter) == dropped
    assert limiter.limits()[KEY]["requests"]["source"] == "cubic"
    clock.now += 1.0  # out of the pause (0.5 s, then 1 s: no retry-after)
    send(limiter, clock, CUBIC_K_S - 1.0, 100)  # bound by the rate: climbs back on the curve
    assert dropped < rpm(limiter) <= sending * 1.01  # ... to where the 429 came, K s later
    send(limiter, clock, CUBIC_K_S, 100)
    assert rpm(limiter) > sending * 1.05  # and then probes above it


def test_429s_without_retry_after_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    clock = FakeClock()
    limiter = auto(clock, max_pause_s=3.0)
    pauses = []
    for _ in range(5):
        pauses.append(limiter.observe_429(KEY, NO_HEADERS))
        assert limiter.observe_429(KEY, NO_HEADERS) == pauses[-1]  # same burst: same pause
        clock.now += pauses[-1]  # the retry after the pause is refused again
    assert pauses == [0.5, 1.0, 2.0, 3.0, 3.0]  # random() = 1.0: the top of each jitter range
    limiter.observe(KEY, NO_HEADERS)  # a success starts the backoff over
    assert limiter.observe_429(KEY, NO_HEADERS) == 0.5
    jittered = RateLimiter("auto", None, clock=clock, random=lambda: 0.0)  # type: ignore[arg-type]
    assert jittered.observe_429(KEY, NO_HEADERS) == 0.25  # the bottom: half the backoff
    assert jittered.observe_429(KEY, {"retry-after": "2"}) == 2.0  # the server's word wins


def test_azure_remaining_holds_growth_and_names_the_refused_dimension() -> None:
    clock = FakeClock()
    limiter = auto(clock, tpm="auto")
    nearly_spent = {"x-ratelimit-remaining-requests": "1", "x-ratelimit-remaining-tokens": "9000"}
    send(limiter, clock, 3.0, 100, nearly_spent)
    assert rpm(limiter) == START_RPM  # the window is nearly spent: no growth
    plenty = {"x-ratelimit-remaining-requests": "90", "x-ratelimit-remaining-tokens": "90000"}
    send(limiter, clock, 3.0, 100, plenty)
    assert rpm(limiter) > START_RPM
    tokens_before = limiter.limits()[KEY]["tokens"]["per_minute"]
    before = rpm(limiter)
    limiter.observe_429(KEY, {"x-ratelimit-remaining-requests": "0", "retry-after": "1"})
    assert rpm(limiter) < before  # requests had nothing left: they slow down
    assert limiter.limits()[KEY]["tokens"]["per_minute"] == tokens_before


def test_configured_limits_do_not_learn() -> None:
    clock = FakeClock()
    limiter = RateLimiter(600, None, clock=clock, safety_margin=1.0, first_hold_s=0.0)
    send(limiter, clock, 3.0, 100)
    limiter.observe_429(KEY, NO_HEADERS)
    row = limiter.limits()[KEY]["requests"]
    assert row["per_minute"] == 600
    assert row["source"] == "configured"


def announcing(limit: int, remaining: int) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(remaining),
    }


def test_the_burst_widens_only_when_the_server_shows_room_and_narrows_on_a_short_window() -> None:
    clock = FakeClock()
    limiter = auto(clock)
    # a per-second server: remaining never above one second's worth -> the burst stays 1 s
    send(limiter, clock, 3.0, 100, announcing(600, 9))
    assert limiter.limits()[KEY]["requests"]["burst_s"] == 1.0
    assert limiter.limits()[KEY]["requests"]["source"] == "announced"

    clock = FakeClock()
    limiter = auto(clock, safety_margin=0.9)
    # a per-minute bucket: after a whole burst, most of the minute is still there
    send(limiter, clock, 5.0, 100, announcing(600, 550))
    wide = limiter.limits()[KEY]["requests"]["burst_s"]
    assert wide >= 8.0
    # a 429 while sending below the announced rate: the window is shorter than it says
    limiter.observe_429(KEY, {**announcing(600, 0), "retry-after": "1"})
    narrowed = limiter.limits()[KEY]["requests"]["burst_s"]
    assert narrowed == 1.0  # back to one second's worth
    send(limiter, clock, 5.0, 100, announcing(600, 550))
    assert limiter.limits()[KEY]["requests"]["burst_s"] == narrowed  # no longer grows


def test_a_widened_burst_adds_the_room_a_per_minute_server_has_left_at_once() -> None:
    """A per-minute bucket (600 a minute, full at the start): the burst doubles per answer
    while a whole burst went and the server still had two more, and each doubling lets the
    added room go at once, never beyond what the server says is left. Before, the burst
    widened but the level refilled at the rate: 10 a second, a minute's burst never used."""
    clock = FakeClock()
    limiter = auto(clock, safety_margin=0.9, open_until_refused=True)
    taken = 0
    for _ in range(200):  # 2 s of 100 offers a second, each answered at once
        clock.now += 0.01
        if limiter.try_acquire(KEY) is not None:
            taken += 1
            limiter.observe(KEY, announcing(600, 600 - taken))
            limiter.acknowledge(KEY)
    assert taken >= 150  # the rate alone: 9 at once + 9 a second = 27
    assert taken <= 0.9 * 600  # never past the margin of what the server had
    assert limiter.limits()[KEY]["requests"]["burst_s"] > 8.0

    # a per-second server says at most a second's worth is left: nothing to widen into
    clock = FakeClock()
    limiter = auto(clock, safety_margin=0.9, open_until_refused=True)
    per_second = send(limiter, clock, 2.0, 100, announcing(600, 9))
    assert per_second <= 9 + 2 * 9 + 1
    assert limiter.limits()[KEY]["requests"]["burst_s"] == 1.0


def test_a_429_after_the_burst_widened_into_the_room_narrows_it_for_good() -> None:
    """A server that reports per-minute room but enforces a shorter window (OpenAI documents
    quantised limits) refuses the room that went at once: sent faster than the announced rate,
    but after the server said it had room, so the window is shorter than its headers say. The
    burst goes back to the one before the refused widening (the last that held), for good;
    against a one-second window the first widening is refused, so that is one second."""
    clock = FakeClock()
    limiter = auto(clock, safety_margin=0.9, open_until_refused=True)
    send(limiter, clock, 0.5, 200, announcing(600, 590))
    wide = limiter.limits()[KEY]["requests"]["burst_s"]
    assert wide > 2.0
    assert limiter.limits()[KEY]["requests"]["sending_per_minute"] >= 600  # faster than it
    limiter.observe_429(KEY, {**announcing(600, 0), "retry-after": "1"})
    assert limiter.limits()[KEY]["requests"]["burst_s"] == wide / 2
    limiter.observe_429(KEY, {**announcing(600, 0), "retry-after": "1"})  # the same burst's
    assert limiter.limits()[KEY]["requests"]["burst_s"] == wide / 2  # one narrowing for it
    clock.now += 2.0
    send(limiter, clock, 5.0, 100, announcing(600, 590))
    assert limiter.limits()[KEY]["requests"]["burst_s"] == wide / 2  # never wider again

    clock = FakeClock()  # a one-second window: the first widening is refused
    limiter = auto(clock, safety_margin=0.9, open_until_refused=True)
    while limiter.limits().get(KEY, {}).get("requests", {}).get("burst_s", 1.0) == 1.0:
        clock.now += 0.01
        if limiter.try_acquire(KEY) is not None:
            limiter.observe(KEY, announcing(600, 590))
            limiter.acknowledge(KEY)
    assert limiter.limits()[KEY]["requests"]["burst_s"] == 2.0
    limiter.observe_429(KEY, {**announcing(600, 0), "retry-after": "1"})
    assert limiter.limits()[KEY]["requests"]["burst_s"] == 1.0
    clock.now += 2.0
    send(limiter, clock, 5.0, 100, announcing(600, 590))
    assert limiter.limits()[KEY]["requests"]["burst_s"] == 1.0  # one episode, for good


async def test_what_is_left_is_charged_with_the_others_in_flight() -> None:
    """An answer's `remaining` was counted before the rest of its burst reached the server:
    the others in flight are charged against it. Before, the first answer of a burst of 20
    left the bucket at 80 on the word "25 left", and a 10 s window (Azure) refused what the
    refill let go meanwhile."""
    clock = FakeClock()
    limiter = auto(clock, open_until_refused=True)
    limiter.observe(KEY, announcing(6000, 6000))  # 100 a second, a burst of 100
    clock.now += 1.0  # the bucket fills to it
    gates = [limiter.gate(KEY) for _ in range(20)]
    for gate in gates:
        await gate.__aenter__()  # type: ignore[union-attr]
        assert limiter.try_acquire(KEY) is not None
    limiter.observe(KEY, announcing(6000, 25))  # one of the 20 answered: 19 still out
    granted = 0
    while limiter.try_acquire(KEY) is not None and granted < 100:
        granted += 1
    assert granted == 25 - 19
    for gate in gates:
        await gate.__aexit__(None, None, None)  # type: ignore[union-attr]


def test_learner_floor_keeps_a_rate() -> None:
    clock = FakeClock()
    learner = Learner(clock, floor=6.0)
    for _ in range(20):
        clock.now += 2.0
        rate = learner.throttled(6.0)
        assert rate is None or rate >= 6.0


async def test_a_429_from_a_silent_server_limits_attempts_in_flight_then_it_grows_back() -> None:
    """AIMD on concurrency: off until a 429, then WINDOW_BETA x what was in flight, first in first
    out, growing by 1/limit per completed attempt until the ceiling turns it off."""
    import asyncio

    from tests.support.clock import settle

    clock = FakeClock()
    limiter = auto(clock, max_concurrency=12)
    send(limiter, clock, 2.0, 2)  # 120/min against 500: the 429 below is not the rate's
    gate = limiter.gate(KEY)
    assert gate is not None
    held = [limiter.gate(KEY) for _ in range(10)]
    for g in held:
        await g.__aenter__()  # type: ignore[union-attr]
    limiter.observe_429(KEY, NO_HEADERS)
    assert limiter.limits()[KEY]["concurrency_limit"] == pytest.approx(WINDOW_BETA * 10)
    assert rpm(limiter) == START_RPM  # and the rate is left alone
    entered: list[int] = []

    async def attempt(i: int) -> None:
        async with limiter.gate(KEY):  # type: ignore[union-attr]
            entered.append(i)
            await asyncio.Event().wait()  # in flight until cancelled

    waiting = [asyncio.create_task(attempt(i)) for i in range(2)]
    await settle()
    assert entered == []  # 10 in flight, limit 9
    await held[0].__aexit__(None, None, None)  # type: ignore[union-attr]
    await settle()
    assert entered == []  # 9 in flight: still at the limit (no growth in the drop's episode)
    await held[1].__aexit__(None, None, None)  # type: ignore[union-attr]
    await settle()
    assert entered == [0]  # first in, first out
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    for g in held[2:]:
        await g.__aexit__(None, None, None)  # type: ignore[union-attr]
    row = limiter.limits()[KEY]
    assert row["in_flight"] == 0
    clock.now += 1.0  # past the drop's episode: answers from now on may grow the limit
    before = limiter.limits()[KEY]["concurrency_limit"]
    for _ in range(20):  # one at a time: the limit is not being used, so it does not grow
        async with limiter.gate(KEY):  # type: ignore[union-attr]
            pass
    assert limiter.limits()[KEY]["concurrency_limit"] == before
    busy = [limiter.gate(KEY) for _ in range(5)]
    for g in busy:
        await g.__aenter__()  # type: ignore[union-attr]
    for _ in range(60):  # used: +1/limit per completion, up to the ceiling, where it turns off
        async with limiter.gate(KEY):  # type: ignore[union-attr]
            pass
    assert limiter.limits()[KEY]["concurrency_limit"] is None
    for g in busy:
        await g.__aexit__(None, None, None)  # type: ignore[union-attr]


def test_configured_or_announced_limits_have_no_learned_concurrency() -> None:
    clock = FakeClock()
    assert RateLimiter(600, None, clock=clock).gate(KEY) is None
    limiter = auto(clock)
    limiter.observe(KEY, announcing(600, 5))
    limiter.observe_429(KEY, {**announcing(600, 0), "retry-after": "1"})
    assert limiter.limits()[KEY]["concurrency_limit"] is None  # the rate explains it


def test_an_announced_limit_the_server_does_not_keep_becomes_a_ceiling() -> None:
    """Issue 21, item 2: a server announcing 10^9 RPM while enforcing 600 was believed for
    ever (8x its limit, 90 % 429s). A 429 while sending well below the announced rate, the
    burst already one second's worth, lowers the rate; later answers announcing the same
    10^9 do not raise it back, and growth stays below the announced value."""
    clock = FakeClock()
    limiter = auto(clock)
    liar = announcing(10**9, 10**9 - 1)
    send(limiter, clock, 2.0, 100, liar)  # 6000/min sent, far below the announced 10^9
    assert rpm(limiter) == 10**9
    limiter.observe_429(KEY, {**liar, "retry-after": "1"})  # first: a shorter window?
    assert limiter.limits()[KEY]["requests"]["burst_s"] == 1.0
    clock.now += 1.0
    send(limiter, clock, 1.0, 100, liar)
    limiter.observe_429(KEY, {**liar, "retry-after": "1"})  # refused again, at one second's
    lowered = rpm(limiter)
    assert lowered < 6000  # BETA x what was being sent
    assert limiter.limits()[KEY]["requests"]["source"] == "cubic"
    clock.now += 1.0
    send(limiter, clock, 1.0, 100, liar)
    assert rpm(limiter) < 10_000  # the same lie does not reset it
    limiter.observe(KEY, announcing(3000, 10))  # a lower announcement still lowers it
    assert rpm(limiter) <= 3000


@pytest.mark.parametrize("open_until_refused", [True, False])
def test_an_announced_limit_far_above_the_enforced_one_costs_one_burst_of_429s(
    open_until_refused: bool,
) -> None:
    """Issue 32: a server announcing 10^9 RPM (an organisation's limit) while it enforces 50 a
    second (a project's) and says how long to wait (retry-after-ms): 1000 a second offered for
    10 s. The key came down by 0.7 per episode of 429s from what it was sending (259 429s over
    4 s, 100 callers cold on the simulator failed 49 of 600 calls). Now the first refusal
    takes it to what the server took over the last second, the bucket holds nothing more (the
    server said its window is spent), and later 429s refine it: a few 429s in all, and the
    rate ends at the enforced one."""
    clock = FakeClock()
    limiter = auto(clock, open_until_refused=open_until_refused)
    liar = announcing(10**9, 10**9 - 1)
    level, last, ok, refused = 50.0, 0.0, 0, 0
    for _ in range(10_000):
        clock.now += 0.001
        if limiter.try_acquire(KEY) is None:
            continue
        level, last = min(50.0, level + (clock.now - last) * 50.0), clock.now
        if level >= 1:
            level -= 1
            ok += 1
            limiter.observe(KEY, liar)
        else:
            refused += 1
            wait_ms = str(max(1, round((1 - level) / 50 * 1000)))
            limiter.observe_429(KEY, {**liar, "retry-after": "1", "retry-after-ms": wait_ms})
        limiter.acknowledge(KEY)
    assert refused <= 12  # 259 before
    assert ok >= 540  # the server's 50 a second (and its first burst) used
    assert 0.9 * 3000 <= rpm(limiter) <= 1.2 * 3000
    assert limiter.limits()[KEY]["requests"]["source"] == "cubic"


def test_a_tiny_announced_limit_waits_no_longer_than_a_retry_after_may_with_the_margin() -> None:
    """The floor (one request per max_server_wait_s) was applied before the safety margin:
    1 RPM announced with the default margin of 0.9 held every request 66.7 s, past the 60 s
    a server's own Retry-After may hold a key."""
    clock = FakeClock()
    limiter = auto(clock, safety_margin=0.9, max_pause_s=60.0)
    tiny = {"x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0"}
    grants: list[float] = []
    for _ in range(12_000):  # 20 minutes, offered ten a second
        clock.now += 0.1
        if limiter.try_acquire(KEY) is not None:
            grants.append(clock.now)
            limiter.observe(KEY, tiny)
            limiter.acknowledge(KEY)
    gaps = [later - earlier for earlier, later in itertools.pairwise(grants[1:])]
    assert gaps
    assert max(gaps) <= 60.0 + 0.1


def test_a_429_while_sending_at_the_announced_rate_does_not_distrust_it() -> None:
    clock = FakeClock()
    limiter = auto(clock)
    send(limiter, clock, 3.0, 10, announcing(600, 100))  # 600/min: at the announced rate
    limiter.observe_429(KEY, {**announcing(600, 0), "retry-after": "1"})
    assert limiter.limits()[KEY]["requests"]["source"] == "announced"
    assert rpm(limiter) == 600


def test_an_absurdly_low_announced_limit_is_floored() -> None:
    """Issue 21, item 6: 0.001 RPM / 1 TPM announced stalled a key for hours, past
    max_server_wait_s: announced values get the floors learned ones have (one request per
    max_server_wait_s; 1000 TPM)."""
    clock = FakeClock()
    limiter = auto(clock, tpm="auto", max_pause_s=60.0)
    tiny = {
        "x-ratelimit-limit-requests": "0.001",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-limit-tokens": "1",
        "x-ratelimit-remaining-tokens": "0",
    }
    limiter.observe(KEY, tiny)
    row = limiter.limits()[KEY]
    assert row["requests"]["per_minute"] >= 1.0
    assert row["tokens"]["per_minute"] >= 1000.0
    state = limiter.feedback.state(Key.of(KEY))
    assert state.wait_time(500) <= 60.0  # a 500-token request waits at most a Retry-After's cap
    configured = RateLimiter(600, 100_000, clock=clock, safety_margin=1.0)
    configured.observe(KEY, tiny)  # a ceiling the user set is lowered, but not below the floors
    assert configured.limits()[KEY]["requests"]["per_minute"] >= 1.0


def test_a_silent_server_refusing_nearly_everything_is_a_spent_rate() -> None:
    """Issue 32 (tests/integration/test_server_kinds.py has the calls): a silent per-minute
    bucket past its burst refuses all but its refill. Refused more than twice as often as
    answered over the last second, a key is spent (``Concurrency.spent``: it backs off instead
    of reading the refusals as a full window's), and its rate drops to what the server
    answered over that second, not to 0.7 x what was being sent."""
    from rat_langchain.guards.learn import Concurrency

    clock = FakeClock()
    window = Concurrency(100, clock=clock)
    for i in range(30):  # a window server: refusals of the overshoot, answers of the rest
        clock.now += 0.01
        window.outcome(clock.now, refused=i % 3 == 0)
    assert not window.spent(clock.now)
    for i in range(30):  # a spent rate: one answer in ten
        clock.now += 0.03
        window.outcome(clock.now, refused=i % 10 != 0)
    assert window.spent(clock.now)
    clock.now += 2.0  # refusals a second old say nothing now
    assert not window.spent(clock.now)

    rates = {}
    for spent in (False, True):
        clock = FakeClock()
        learner = Learner(clock, floor=1.0)
        for i in range(200):  # 100 a second sent for 2 s; the last second, 10 answered
            clock.now += 0.01
            learner.sent(1, 100.0, 50.0)
            if i < 100 or i % 10 == 0:
                learner.answered(6000.0, 100.0)
        assert learner.throttled(6000.0) is not None  # an episode: now in cubic
        clock.now += 1.5
        for _ in range(100):
            clock.now += 0.01
            learner.sent(1, 100.0, 50.0)
            if _ % 10 == 0:
                learner.answered(6000.0, 100.0)
        rates[spent] = learner.throttled(6000.0, spent=spent)
    assert rates[False] is not None
    assert rates[False] > 3000  # 0.7 x what was being sent
    assert rates[True] is not None
    assert rates[True] <= BETA * 10 * 60 + 1  # what it answered


def test_a_wall_lets_one_attempt_through_at_a_time_until_an_answer_or_its_hold_ends() -> None:
    """A silent 429 after a backoff's pause (a spent window that refuses whatever comes, such
    as a fixed per-minute window): the callers the window held went at each pause's end, into
    the same wall, spending an attempt each. Walled, one goes at a time; an answer, or the
    hold (max_server_wait_s: a server that refuses for good), ends it."""
    from rat_langchain.guards.learn import Concurrency

    clock = FakeClock()
    window = Concurrency(100, clock=clock)
    assert window.admits(5)
    window.wall(clock.now, 60.0)
    assert window.admits(0)  # the probe
    assert not window.admits(1)  # the others wait, their attempts unspent
    window.wall(clock.now + 30, 60.0)  # a later refusal of the same wall: the hold stands
    clock.now += 59.0
    assert not window.admits(1)
    clock.now += 2.0
    assert window.admits(1)  # held 60 s: attempts go (and fail) as before
    window.unwall()
    window.wall(clock.now, 60.0)
    assert not window.admits(1)
    window.unwall()  # an answer
    assert window.admits(1)


def test_a_429_after_the_backoffs_pause_walls_a_silent_key() -> None:
    clock = FakeClock()
    limiter = auto(clock)
    send(limiter, clock, 1.0, 10)
    state = limiter.feedback.state(Key.of(KEY))
    assert state.concurrency is not None
    limiter.observe_429(KEY, NO_HEADERS)
    assert not state.concurrency.walled  # one refusal: a backoff
    clock.now += 60.0  # past the pause, nothing answered since
    limiter.observe_429(KEY, NO_HEADERS)
    assert state.concurrency.walled
    limiter.observe(KEY, NO_HEADERS)  # an answer ends it
    assert not state.concurrency.walled


async def test_the_burst_widens_once_per_round_trip() -> None:
    """The first answers of a burst were all sent before any widening, and each said the
    per-minute bucket was nearly full: the burst doubled on each, three times in 250 ms, each
    time into the same room, and the server refused the third (bench_embed_limit, 100
    callers). A widening now waits until the attempts out when it came have ended."""
    clock = FakeClock()
    limiter = auto(clock, safety_margin=0.9, open_until_refused=True)
    limiter.observe(KEY, announcing(6000, 6000))  # 100 a second, a per-minute bucket
    clock.now += 1.0
    gates = []
    for _ in range(100):  # a burst goes out through the gate
        gate = limiter.gate(KEY)
        await gate.__aenter__()  # type: ignore[union-attr]
        gates.append(gate)
        if limiter.try_acquire(KEY) is None:
            break
    limiter.observe(KEY, announcing(6000, 5990))  # its first answer: room for more
    limiter.acknowledge(KEY)
    first = limiter.limits()[KEY]["requests"]["burst_s"]
    assert first == 2.0
    while limiter.try_acquire(KEY) is not None:  # the widened burst goes
        pass
    for _ in range(5):  # answers to attempts sent before the widening: no second doubling
        limiter.observe(KEY, announcing(6000, 5980))
        limiter.acknowledge(KEY)
        assert limiter.limits()[KEY]["requests"]["burst_s"] == first
    for gate in gates:
        await gate.__aexit__(None, None, None)  # type: ignore[union-attr]


async def test_a_429_of_an_attempt_sent_before_any_limit_was_known_narrows_nothing() -> None:
    """A zero-config start lets a first wave out before any answer says the limit; its 429s
    are that wave's overshoot, not a window shorter than the headers say nor a limit the
    server breaks. Read as either, they froze the key at a one-second burst, or distrusted an
    honest announced limit."""
    clock = FakeClock()
    limiter = auto(clock, safety_margin=0.9, open_until_refused=True)
    gates = []
    while True:  # the first wave, as many as the slow start lets out: no limit known yet
        gate = limiter.gate(KEY)
        assert gate is not None
        entered = asyncio.ensure_future(gate.__aenter__())
        await asyncio.sleep(0)
        if not entered.done():
            entered.cancel()
            break
        gates.append(gate)
    assert len(gates) >= 2
    limiter.observe(KEY, announcing(600, 580))  # the first answer announces the limit
    for admitted in range(1, len(gates) + 1):  # the wave's refusals
        limiter.observe_429(KEY, {**announcing(600, 0), "retry-after": "0.1"}, admitted=admitted)
        clock.now += 0.01
    requests = limiter.limits()[KEY]["requests"]
    assert requests["source"] == "announced"  # still believed
    assert requests["per_minute"] == 0.9 * 600
    learner = limiter.feedback.known(Key.of(KEY)).learners["requests"]  # type: ignore[union-attr]
    assert learner._burst_cap == 60.0  # no window was learned from them
    for gate in gates:
        await gate.__aexit__(None, None, None)  # type: ignore[union-attr]


async def test_the_tokens_still_in_flight_are_charged_against_what_is_left() -> None:
    """As the requests are: an answer's remaining tokens were counted before the rest of its
    burst, so the others in flight (at the mean size of the last grants) are charged against
    it. Uncharged, 100 embedding requests of 1800 tokens each in flight went unseen and a
    10 s bucket refused the room given on that word."""
    clock = FakeClock()
    limiter = auto(clock, open_until_refused=True, tpm="auto")
    headers = {
        "x-ratelimit-limit-requests": "6000",
        "x-ratelimit-remaining-requests": "6000",
        "x-ratelimit-limit-tokens": "6000000",
        "x-ratelimit-remaining-tokens": "100000",
    }
    limiter.observe(KEY, headers)
    clock.now += 1.0
    gates = []
    for _ in range(20):
        gate = limiter.gate(KEY)
        await gate.__aenter__()  # type: ignore[union-attr]
        gates.append(gate)
        assert limiter.try_acquire(KEY, tokens=1000) is not None
    limiter.observe(KEY, {**headers, "x-ratelimit-remaining-tokens": "25000"})  # 19 still out
    granted = 0
    while limiter.try_acquire(KEY, tokens=1000) is not None and granted < 100:
        granted += 1
    assert granted <= 25 - 19 + 1  # the level was capped at 6000 tokens (and what refilled)
    for gate in gates:
        await gate.__aexit__(None, None, None)  # type: ignore[union-attr]
