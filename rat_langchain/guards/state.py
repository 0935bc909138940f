"""What the limiter knows of one key (an endpoint and model): its two buckets, how each learns,
its pause after a 429, its learned concurrency limit, and who is waiting.

Plain data with the arithmetic that reads it (what fits now, how long until it does, what a
caller joining the queue would wait); no lock, no loop, no server. Whoever holds a ``KeyState``
holds the lock that guards it: the feedback policy (guards.feedback) owns both.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from rat_langchain.guards.bucket import RateLimit, TokenBucket, check_size
from rat_langchain.guards.key import Key
from rat_langchain.guards.learn import INITIAL_WINDOW, Concurrency, Learner
from rat_langchain.guards.remember import Remembered, clamp

__all__ = ["MAX_CONCURRENCY", "KeyState", "TimerHandle", "Waiter"]

MAX_CONCURRENCY = 1024  # where a learned concurrency limit turns off without max_concurrency


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


@dataclass
class Waiter:
    """A caller queued for capacity: woken by setting its future."""

    future: asyncio.Future[None]
    tokens: int


class KeyState:
    """Buckets, learners, pause, concurrency and FIFO waiters of one key."""

    def __init__(
        self,
        limit: RateLimit,
        clock: Callable[[], float],
        first_hold_s: float = 0.0,
        *,
        borrow: bool = False,
        max_concurrency: int | None = None,
        open_until_refused: bool = False,
    ) -> None:
        """``open_until_refused``: a dimension left on auto is not applied until the server
        refuses (or announces it); a window of attempts in flight bounds the key meanwhile
        (see ``guards.learn``)."""
        margin = limit.safety_margin
        self.limit = limit
        self.clock = clock
        burst = limit.burst_s
        hold = min(burst, first_hold_s)
        self.requests = (
            TokenBucket(limit.rpm * margin, clock, burst_s=burst, first_hold_s=hold)
            if limit.rpm
            else None
        )
        self.tokens = (
            TokenBucket(limit.tpm * margin, clock, burst_s=burst, first_hold_s=hold)
            if limit.tpm
            else None
        )
        # a learned token limit is an estimate: a request above it waits for a full bucket and
        # borrows, rather than being refused before the server has said what its limit is
        self.borrow = borrow or limit.learn_tpm
        # how each dimension left on "auto" learns its rate and burst (see guards.learn)
        self.learners: dict[str, Learner] = {}
        opens = open_until_refused
        if limit.learn_rpm and self.requests is not None:
            self.learners["requests"] = Learner(
                clock, floor=1.0, burst_s=burst, opens="at_start" if opens else "never"
            )
        if limit.learn_tpm and self.tokens is not None:
            self.learners["tokens"] = Learner(
                clock, floor=1000.0, burst_s=burst, opens="when_answered" if opens else "never"
            )
        self.throttles = 0  # 429s in a row without a retry-after: the backoff's exponent
        # 429s whose completion is still to be acknowledged: those completions are not answers
        # the server accepted (counts, not identities: which completion is skipped is moot)
        self.refusals_to_ack = 0
        # attempts in flight: a slow-starting window while open, then a limit learned from
        # 429s where the server announces none
        self.concurrency = (
            Concurrency(
                max_concurrency or MAX_CONCURRENCY,
                initial=INITIAL_WINDOW if opens else None,
                clock=clock,
            )
            if limit.learn_rpm
            else None
        )
        self.in_flight = 0
        # attempts past the buckets and not yet ended (keys with a gate): what an answer's
        # ``remaining`` may not have counted yet (``Feedback._follow``); ``in_flight`` also
        # counts callers waiting for the buckets
        self.sent_out = 0
        # attempts out when the burst last widened, less those ended since: until they all
        # have, no answer has seen the room the widening gave, and none widens it again
        # (``Feedback._follow``; the first answers of 100 callers widened it three times in
        # 250 ms, each time into the same room, and the server refused the third)
        self.widen_hold = 0
        self.tokens_each = 0.0  # tokens of an attempt granted lately (a moving mean; see _granted)
        self.admissions = 0  # attempts admitted through the gate so far (see ``admit``)
        self.closed_after = 0  # admissions when an open rate closed (see ``refused``)
        # admissions when the first announced limit was heard: an attempt admitted before it
        # went out with no limit known, so its 429 says nothing of the window or of whether
        # the announced limit is kept (``Feedback._slow_down``)
        self.announced_after = 0
        self.gate_waiters: deque[asyncio.Future[int]] = deque()
        self.gate_timer: asyncio.TimerHandle | None = None  # the slow start's pace
        self.paused_until = 0.0
        self.acknowledged = False
        self.waiters: deque[Waiter] = deque()
        self.timer: TimerHandle | None = None

    def busy(self) -> bool:
        """In use: attempts in flight, callers queued, a timer set or a pause running. A key
        that is not busy can be forgotten (``KeyTable``) and made afresh when next used."""
        return bool(
            self.in_flight
            or self.waiters
            or self.gate_waiters
            or self.timer is not None
            or self.gate_timer is not None
            or self.paused_until > self.clock()
        )

    def admit(self) -> int:
        """One more attempt in flight: its admission number, which its 429 reports (see
        ``refused``)."""
        self.in_flight += 1
        self.admissions += 1
        return self.admissions

    def check_size(self, tokens: int, key: Key) -> None:
        if not self.borrow:
            check_size(key, tokens, self.tokens.per_minute if self.tokens is not None else None)

    def applied(self, name: str) -> TokenBucket | None:
        """The bucket of dimension ``name`` if it limits sends now (not one left open)."""
        bucket = self.bucket(name)
        if bucket is None:
            return None
        learner = self.learners.get(name)
        return None if learner is not None and learner.open else bucket

    def wait_time(self, tokens: int) -> float:
        wait = max(0.0, self.paused_until - self.clock())
        requests, bucket = self.applied("requests"), self.applied("tokens")
        if requests is not None:
            wait = max(wait, requests.wait_for(1))
        if bucket is not None:
            wait = max(wait, bucket.wait_for(tokens))
        return wait

    def queue_wait(self, tokens: int) -> float:
        """Expected wait of a caller joining the back of the queue now (an estimate: waiters
        that were cancelled but not yet removed still count)."""
        wait = max(0.0, self.paused_until - self.clock())
        ahead = [w for w in self.waiters if not w.future.done()]
        requests, bucket = self.applied("requests"), self.applied("tokens")
        if requests is not None:
            missing = len(ahead) + 1 - requests.level()
            wait = max(wait, missing / requests.rate)
        if bucket is not None:
            missing = sum(w.tokens for w in ahead) + tokens - bucket.level()
            wait = max(wait, missing / bucket.rate)
        return wait

    def take(self, tokens: int) -> None:
        requests, bucket = self.applied("requests"), self.applied("tokens")
        if requests is not None:
            requests.take(1)
        if bucket is not None:
            bucket.take(tokens)
        self._granted(tokens)

    def _granted(self, tokens: int) -> None:
        """These buckets granted one attempt: the learners measure it, and it is out until
        it ends (``sent_out``, for keys with a gate)."""
        self._sent(tokens)
        if self.concurrency is not None:
            self.sent_out += 1
            # what the attempts out weigh in tokens, to charge against an answer's remaining
            # tokens (``Feedback._follow``): the mean of the last few, not each one's own
            # (ends are counted, not matched to their grants)
            each = self.tokens_each
            self.tokens_each = float(tokens) if not each else each + 0.2 * (tokens - each)

    def _sent(self, tokens: int, *, spent: bool = False) -> None:
        """Tell the learners what was taken (their measured send rate). ``spent``: the
        buckets that granted it (kept elsewhere: Redis) had run dry before."""
        if not self.learners:
            return
        for name, bucket, amount in (
            ("requests", self.requests, 1),
            ("tokens", self.tokens, tokens),
        ):
            learner = self.learners.get(name)
            if learner is not None and bucket is not None:
                level = 0.0 if spent else bucket.last_level
                learner.sent(amount, bucket.capacity, level)

    def refused(self, silent: bool, in_burst: bool, admitted: int | None = None) -> bool:
        """A 429 while the key is open or its window slow-starts (False otherwise: the rate's
        own learning handles it). Each open dimension closes at what the server accepted
        (``Learner.close``), from an empty bucket (the server's window is spent), or stays
        open if nothing was answered to measure that by, or if the learned window was full
        (the refusal is the window's); the window steps down (a silent server may count
        requests in flight) or, where the server reports what is left (Azure), ends. A further
        429 of the burst (``in_burst``) refines each rate to what the server took of it.

        ``admitted``: the refused attempt's admission number (``admit``), where the caller
        knows it. Then a silent server's refusals of an open key are told apart first
        (``_window_or_rate``): the rate stays open while they are the window's."""
        unrefused = [name for name, learner in self.learners.items() if learner.unrefused]
        window = self.concurrency
        if admitted is not None and silent and window is not None:
            if unrefused:
                if not self._window_or_rate(admitted, unrefused):
                    return True  # the window's: it stepped down, the rate stays open
                self._close(unrefused, late=True)
                self.closed_after = self.admissions
                return True
            # an attempt let in before the rate closed: more of the burst that closed it
            in_burst = in_burst or admitted <= self.closed_after
        if in_burst:  # more of the burst that closed the key: what the server refused of it
            refined = False
            for name, learner in self.learners.items():
                bucket = self.bucket(name)
                rate = None if bucket is None else learner.refine(bucket.per_minute)
                if rate is not None and bucket is not None:
                    bucket.adopt(rate)
                    refined = True
            if refined and not unrefused:
                if window is not None and silent:
                    window.throttled(self.in_flight, self.clock(), in_burst=True)
                return True
        if not unrefused and not (window is not None and window.slow_start):
            return False
        # a refusal while the learned window binds (all of it in flight) is the window's: the
        # server counts requests in flight, and the window, not a rate, steps down
        binds = window is not None and window.binds(self.in_flight)
        self._close([] if binds else unrefused)
        if window is not None:
            if silent:
                window.throttled(self.in_flight, self.clock(), in_burst=in_burst)
            else:
                window.announced()
        return True

    def _window_or_rate(self, admitted: int, unrefused: list[str]) -> bool:
        """A silent 429 of an open key, whose attempt was admitted ``admitted``-th: whether it
        shows a spent rate (True) rather than a window over what the server holds at once.

        A server that counts requests in flight (a gateway's ``max_parallel_requests``, a model
        server that refuses instead of queueing) refuses what goes over its count, and takes
        the next attempt as soon as one of its own completes. A spent rate refuses whatever
        comes, until its window refills. So the first refusal steps the window down to what
        was in flight, the refusals of attempts admitted before it (``Concurrency.throttled``,
        in the burst) bring it to what the server took at once, and the rate stays open;
        only refusals of attempts admitted *after* that, more than a window's overshoot
        (``Concurrency.overshot``), close the rate. Why: closing at the first refusal measured
        a cold second (a 16-slot server serving 80 a second closed at 33, and took 7 s to climb
        back); a spent rate costs a few more 429s to be told apart. Lock held."""
        window = self.concurrency
        assert window is not None
        now = self.clock()
        if window.after_drop(admitted, now):
            return window.overshot(self.in_flight)
        in_burst = window.in_episode(now)
        for name in unrefused:  # what the rate would close at, should it be a rate's
            learner = self.learners[name]
            if in_burst:
                learner.refine(0.0)
            else:
                learner.estimate()
        window.throttled(
            self.in_flight, now, in_burst=in_burst, admissions=self.admissions, probe=True
        )
        return False

    def _close(self, names: list[str], *, late: bool = False) -> None:
        """Close each open dimension in ``names`` at what the server accepted (see
        ``Learner.close``; ``late``: at the estimate its episode made, ``close_late``), from
        an empty bucket: the server's window is spent."""
        for name in names:
            bucket = self.bucket(name)
            assert bucket is not None
            learner = self.learners[name]
            rate = learner.close_late() if late else learner.close()
            if rate is None:
                continue
            bucket.adopt(rate)
            bucket.take(bucket.level())
            bucket.release_hold()  # after the take: a bucket's first take arms its hold

    def recall(self, remembered: Remembered, floors: tuple[float, float]) -> None:
        """Start from what an earlier run learned for this key (``guards.remember``): each
        dimension still learning takes its remembered rate (never below ``floors``, the
        limiter's) or is dropped if the server announced it does not limit it; the window
        takes its remembered size. Configured dimensions are the configuration's: untouched."""
        for name, floor in zip(("requests", "tokens"), floors, strict=True):
            learner, bucket = self.learners.get(name), self.bucket(name)
            told = getattr(remembered, name)
            if learner is None or bucket is None or told is None:
                continue
            if told == "unlimited":
                self.drop(name)
                continue
            rate = clamp(told.per_minute, floor)
            learner.recall(told.source, rate)
            bucket.adopt(rate)
        window = remembered.window
        if self.concurrency is not None and window is not None:
            self.concurrency.recall(window.limit, window.slow_start)

    def learned(self) -> dict[str, Any] | None:
        """What is worth remembering of this key (``Remembered``'s fields), or None: nothing
        was learned (every dimension configured, or never answered)."""
        out: dict[str, Any] = {}
        for name in ("requests", "tokens"):
            learner, bucket = self.learners.get(name), self.bucket(name)
            if bucket is None:  # dropped: a server that announces limits, and not this one
                learns = self.limit.learn_rpm if name == "requests" else self.limit.learn_tpm
                out[name] = "unlimited" if learns else None
            elif learner is not None and learner.phase in ("announced", "cubic", "slow_start"):
                out[name] = {"per_minute": bucket.per_minute, "source": learner.phase}
        window = self.concurrency
        if window is not None and self.acknowledged:
            out["window"] = {"limit": window.limit, "slow_start": window.slow_start}
        return out if any(v is not None for v in out.values()) else None

    def bucket(self, name: str) -> TokenBucket | None:
        return self.requests if name == "requests" else self.tokens

    def drop(self, name: str) -> None:
        """The dimension is not limited by the server (see ``RateLimiter.observe``)."""
        setattr(self, name, None)
        self.learners.pop(name, None)

    def try_take(self, tokens: int) -> bool:
        """Take one request and ``tokens`` if both fit now: ``wait_time() <= 0`` then
        ``take()``, refilling each bucket once instead of twice (the path almost every call
        takes)."""
        if self.paused_until > self.clock():
            return False
        requests, bucket = self.applied("requests"), self.applied("tokens")
        if requests is not None and not requests.fits(1):
            return False
        if bucket is not None and not bucket.fits(tokens):
            return False
        if requests is not None:
            requests.take_refilled(1)
        if bucket is not None:
            bucket.take_refilled(tokens)
        self._granted(tokens)
        return True
