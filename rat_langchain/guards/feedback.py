"""What the server's answers do to a key's limits: the feedback policy, apart from any queue.

A success's ``x-ratelimit-*`` headers set a learned limit (up or down), lower a configured one
(never raise it), cap a bucket at what the server says is left, and widen the burst when the
server shows room; every answer lets a learned rate grow; a 429 slows the refused dimension,
steps down the learned concurrency limit of a silent server, and says how long to pause
(guards.learn holds the curves). All of it on a clock, under one lock.

Why apart from the limiter: two limiters use it. The local :class:`~rat_langchain.guards.
limiter.RateLimiter` adds a first-in-first-out queue and timers over the same key states; the
Redis limiter adds shared buckets in Redis and uses this policy alone to learn the rates it
shares (before, it built a second whole ``RateLimiter`` that never acquired, for its policy).
The policy owns the key states and the lock that guards them, so both see one truth.
"""

from __future__ import annotations

import random as _random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from rat_langchain.config import KeysConfig, RateLimitingConfig, RetriesConfig
from rat_langchain.guards._keytable import KeyTable
from rat_langchain.guards.bucket import EPSILON, RateLimit
from rat_langchain.guards.headers import announced, parse_duration, retry_after_seconds
from rat_langchain.guards.key import Key, KeyLike
from rat_langchain.guards.remember import LimitMemory, Remembered
from rat_langchain.guards.state import KeyState

__all__ = ["Feedback"]

_BACKOFF_S = 0.5  # the first pause after a 429 that says nothing of when to come back
_TOKEN_FLOOR = 1000.0  # tokens per minute below which no announced or learned limit goes
_DEFAULTS = RateLimitingConfig()  # one default per setting: the config model's
_RETRY_DEFAULTS = RetriesConfig()
_KEYS = KeysConfig()


class Feedback:
    """The key states of one limiter and what the server's answers do to them.

    Example::

        feedback = Feedback(RateLimit.of("auto", "auto"))
        feedback.observe(key, response.headers)      # a learned limit follows the server
        pause_s = feedback.throttled(key, headers)   # a 429: slower, and how long to wait
    """

    def __init__(
        self,
        default: RateLimit,
        *,
        per_model: Mapping[str, RateLimit] | None = None,
        max_concurrency: int | None = None,
        first_hold_s: float = _DEFAULTS.first_hold_s,
        borrow: bool = False,
        max_pause_s: float = _RETRY_DEFAULTS.max_server_wait_s,
        open_until_refused: bool = False,
        max_keys: int = _KEYS.max_keys,
        idle_s: float = _KEYS.idle_s,
        memory: LimitMemory | None = None,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _random.random,
    ) -> None:
        """``open_until_refused``: limits left on auto are not applied until the server
        refuses or announces them (see ``guards.learn``); without it they start at
        ``START_RPM``/``START_TPM`` (a rate shared through Redis must exist from the start).
        ``memory``: what earlier runs learned (``guards.remember``): a key starts from it."""
        self.memory = memory
        self.default = default
        self.open_until_refused = open_until_refused
        self.per_model = dict(per_model or {})
        self.max_concurrency = max_concurrency
        self.first_hold_s = first_hold_s
        self.borrow = borrow
        self.max_pause_s = max_pause_s
        self._clock = clock
        self._random = random  # the jitter of backoffs (a parameter: tests fix it)
        self._states: KeyTable[KeyState] = KeyTable(
            self._new_state,
            busy=KeyState.busy,
            max_keys=max_keys,
            idle_s=idle_s,
            clock=clock,
            what="rate limiter",
        )
        self.lock = threading.Lock()  # guards every key state: held by its users too

    @property
    def max_keys(self) -> int:
        """Key states kept at most (``performance.keys.max_keys``)."""
        return self._states.max_keys

    @property
    def idle_s(self) -> float:
        """A key state unused this long is forgotten (``performance.keys.idle_s``)."""
        return self._states.idle_s

    def fresh(self) -> Feedback:
        """The same settings with nothing learned yet (the Redis limiter learns the shared
        buckets' rates with one, beside its local stand-in's)."""
        return Feedback(
            self.default,
            per_model=self.per_model,
            max_concurrency=self.max_concurrency,
            first_hold_s=self.first_hold_s,
            borrow=self.borrow,
            max_pause_s=self.max_pause_s,
            open_until_refused=self.open_until_refused,
            max_keys=self.max_keys,
            idle_s=self.idle_s,
            clock=self._clock,
            random=self._random,
        )

    def _floor(self, name: str) -> float:
        """The lowest limit per minute a server may announce for ``name``: one request per
        ``max_pause_s`` (a key must not wait longer than a Retry-After may hold it), and the
        token learner's floor for tokens. Announced values are untrusted too: 0.001 RPM stalled
        a key for hours."""
        if name == "requests":
            return 60.0 / max(self.max_pause_s, 1e-3)
        return _TOKEN_FLOOR

    def floors(self) -> tuple[float, float]:
        """(requests, tokens) per minute below which no rate goes, whoever says so: the
        server's headers, a learner, or another process through Redis."""
        return self._floor("requests"), self._floor("tokens")

    def limit_for(self, key: KeyLike) -> RateLimit:
        return self.per_model.get(Key.of(key).model, self.default)

    def _new_state(self, key: Key) -> KeyState:
        state = KeyState(
            self.limit_for(key),
            self._clock,
            self.first_hold_s,
            borrow=self.borrow,
            max_concurrency=self.max_concurrency,
            open_until_refused=self.open_until_refused,
        )
        if self.memory is not None and state.learners:
            remembered = self.memory.recall(key)
            if remembered is not None:
                state.recall(remembered, self.floors())
        return state

    def learned(self) -> dict[Key, Remembered]:
        """What each key has learned, to be remembered for the next run (``memory.save``)."""
        memory = self.memory
        if memory is None:
            return {}
        with self.lock:
            rows = [(key, state.learned()) for key, state in self._states.items()]
        return {key: memory.entry(key, **row) for key, row in rows if row is not None}

    def state(self, key: Key) -> KeyState:
        """The state of ``key``, made on first use (or after it was forgotten idle). Lock held."""
        return self._states.obtain(key)

    def known(self, key: Key) -> KeyState | None:
        """The state of ``key`` if it has one (no lock needed: only idle states are removed,
        and what an idle state is given back is moot)."""
        return self._states.peek(key)

    # -- feedback from the server --------------------------------------------------------------

    def acknowledge(self, key: KeyLike, *, busy: bool | None = None) -> bool:
        """An attempt for ``key`` completed: end the first burst's hold (see ``TokenBucket``),
        and let a learned rate the server announces nothing of grow (see ``guards.learn``;
        ``busy``: whether the rate binds, where the caller knows better than the send rate
        this limiter measured). True when the key's capacity changed: its queue should look
        again."""
        key = Key.of(key)
        known = self._states.peek(key)
        if known is not None and known.acknowledged and not known.learners:
            return False  # every call after the first: no lock (the flag only goes False -> True)
        with self.lock:
            state = self._states.peek(key)
            if state is None:
                return False
            state.sent_out = max(0, state.sent_out - 1)
            state.widen_hold = max(0, state.widen_hold - 1)
            if not state.acknowledged:
                state.acknowledged = True
                for bucket in (state.requests, state.tokens):
                    if bucket is not None:
                        bucket.release_hold()
            if state.refusals_to_ack > 0:  # a 429 completing: not an answer to learn from
                state.refusals_to_ack -= 1
                return False
            grew = False
            for name, learner in state.learners.items():
                bucket = state.bucket(name)
                if bucket is None:
                    continue
                rate = learner.answered(bucket.per_minute, bucket.capacity, busy=busy)
                if rate is not None and learner.ceiling is not None:
                    rate = min(rate, learner.ceiling)  # below an announced rate it broke
                if rate is not None and rate != bucket.per_minute:
                    bucket.adopt(rate)
                    grew = True
            return grew or not state.learners

    def observe(self, key: KeyLike, headers: Mapping[str, str]) -> dict[str, float]:
        """Follow the server's ``x-ratelimit-*`` headers (a project-level limit too, where the
        server sends one: the tighter binds): adopt a learned limit it announces, never go
        above a configured one, never hold more than it says is left, and widen the burst
        when it shows it allows more. Returns the room each widened dimension was given
        (``TokenBucket.resize_burst``), for buckets kept elsewhere to give it too."""
        return self._follow(Key.of(key), headers, answered=True)

    def _follow(self, key: Key, headers: Mapping[str, str], *, answered: bool) -> dict[str, float]:
        """``observe`` for a success (``answered``) or a 429."""
        said = {name: announced(headers, name) for name in ("requests", "tokens")}
        # A server that announces limits announces every one it enforces (OpenAI sends both):
        # a learned dimension it says nothing of, neither limit nor remaining, is not limited.
        announcing = any(told.limit is not None for told in said.values())
        rooms: dict[str, float] = {}
        with self.lock:
            state = self.state(key)
            if answered:
                state.throttles = 0  # the backoff of 429s without a retry-after starts over
                if state.concurrency is not None:
                    state.concurrency.unwall()
            margin = state.limit.safety_margin
            learns = {"requests": state.limit.learn_rpm, "tokens": state.limit.learn_tpm}
            widened = False
            if announcing:
                for name, told in said.items():
                    bucket = state.bucket(name)
                    unsaid = told.limit is None and told.remaining is None
                    if learns[name] and bucket is not None and unsaid:
                        state.drop(name)
            for name in ("requests", "tokens"):
                bucket = state.bucket(name)
                if bucket is None:
                    continue
                told = said[name]  # garbage and negative values left out
                learner = state.learners.get(name)
                if told.limit is not None and told.limit > 0:
                    limit = max(told.limit * margin, self._floor(name))  # floor: after it
                    broken = None if learner is None else learner.ceiling  # distrusted
                    if learns[name] and broken is None:
                        bucket.adopt(limit)  # up as well as down
                    else:  # a ceiling the user set, or an announced rate the server broke
                        bucket.shrink(limit)
                        if learner is not None and broken is not None:
                            learner.ceiling = min(broken, limit)
                    if learner is not None and broken is None:
                        if learner.phase != "announced":
                            state.announced_after = state.admissions
                        spent = learner.announced()  # sent while open, in its window
                        if spent > 0:
                            bucket.take(spent)
                    if name == "requests" and state.concurrency is not None:
                        state.concurrency.announced()  # the rate bounds the key now
                elif name == "requests" and state.concurrency is not None:
                    state.concurrency.heard(told.remaining, state.in_flight)
                if learner is not None:
                    learner.heard(told.remaining)
                    # one doubling per round trip, as TCP's slow start: an answer to an
                    # attempt sent before the last widening has not seen the room it gave
                    wider = (
                        None if state.widen_hold else learner.widen(told.remaining, bucket.capacity)
                    )
                    if wider is not None:
                        widened = True
                        # an announced (per-minute) limit's room is the server's word on
                        # what is left; a learned one's (Azure) is only a window's
                        room = None
                        if learner.phase == "announced" and told.remaining is not None:
                            room = rooms[name] = told.remaining * margin
                        bucket.resize_burst(wider, room=room)
                if told.remaining is not None:
                    # never looser than our own view. The others in flight may reach the
                    # server after it counted this one: they are charged against what it
                    # said is left (as the slow start's credit is). Why: answers come back in
                    # the order the server counted them, so the first of a burst says most is
                    # left while the rest of the burst is still to be counted, and a 10 s
                    # window (Azure) refused what the refill let go on that word
                    left = told.remaining
                    others = max(0, min(state.sent_out, state.in_flight) - 1)
                    if name == "requests":
                        left = max(0.0, left - others)
                    else:  # tokens: embeddings of 1800 tokens, 100 in flight, are 180,000
                        left = max(0.0, left - others * state.tokens_each)
                    bucket.cap(left)
            if widened:
                state.widen_hold = state.sent_out
        return rooms

    # -- for a limiter that keeps its buckets elsewhere (Redis) --------------------------------

    def record(self, key: KeyLike, tokens: int, *, spent: bool = False) -> None:
        """``tokens`` and one request were sent for ``key`` through buckets kept elsewhere:
        measure the send rate without taking from these buckets. ``spent``: those buckets
        had run dry before this send (what a take from these would have shown)."""
        key = Key.of(key)
        with self.lock:
            self.state(key)._sent(tokens, spent=spent)

    def rates(self, key: KeyLike) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
        """(per minute, burst seconds) of the requests and tokens buckets of ``key`` as learned
        so far (after the safety margin); None for a dimension that is not limited."""
        key = Key.of(key)
        with self.lock:
            state = self.state(key)
            return tuple(  # type: ignore[return-value]
                None if b is None else (b.per_minute, b.burst_s)
                for b in (state.requests, state.tokens)
            )

    def per_minute(self, key: KeyLike) -> tuple[float | None, float | None]:
        """The (requests, tokens) per minute that limit ``key``'s sends now (None: not
        limited, or left open until the server refuses: its starting value is no limit the
        server set, and sizing requests by it sent 20,000 texts as 200 requests)."""
        key = Key.of(key)
        with self.lock:
            state = self.state(key)
            applied = (state.applied("requests"), state.applied("tokens"))
            return (
                None if applied[0] is None else applied[0].per_minute,
                None if applied[1] is None else applied[1].per_minute,
            )

    def follow(
        self,
        key: KeyLike,
        requests: tuple[float, float] | None,
        tokens: tuple[float, float] | None,
    ) -> None:
        """Take the rates another limiter sharing this limit has learned (see ``rates``): a
        dimension it found unlimited is dropped, a lower rate is a 429 it saw."""
        key = Key.of(key)
        with self.lock:
            state = self.state(key)
            for name, shared in (("requests", requests), ("tokens", tokens)):
                bucket, learner = state.bucket(name), state.learners.get(name)
                if bucket is None or learner is None:
                    continue  # configured (not learned), or already unlimited
                if shared is None:
                    state.drop(name)
                    continue
                per_minute, burst_s = shared
                per_minute = max(per_minute, self._floor(name))  # another process's word
                learner.follow(per_minute, bucket.per_minute)
                bucket.adopt(per_minute)
                if burst_s != bucket.burst_s:
                    learner.burst_s = burst_s
                    bucket.resize_burst(burst_s)

    def drain(self, key: KeyLike) -> None:
        """Empty the buckets of ``key`` now: a stand-in joining a window that another limiter
        has been spending must not add a fresh burst on top of it."""
        key = Key.of(key)
        with self.lock:
            state = self.state(key)
            for bucket in (state.requests, state.tokens):
                if bucket is not None:
                    bucket.take(bucket.level())

    def pauses(self) -> dict[Key, float]:
        """Seconds left of each key's pause (keys that are not paused are left out)."""
        now = self._clock()
        with self.lock:
            return {
                key: state.paused_until - now
                for key, state in self._states.items()
                if state.paused_until > now
            }

    def pause(self, key: KeyLike, seconds: float) -> float:
        """Hold every request of ``key`` for ``seconds`` (clamped to ``max_pause_s``: headers
        are untrusted); the seconds it holds."""
        key = Key.of(key)
        seconds = min(max(0.0, seconds), self.max_pause_s)
        with self.lock:
            state = self.state(key)
            state.paused_until = max(state.paused_until, self._clock() + seconds)
        return seconds

    def throttled(
        self, key: KeyLike, headers: Mapping[str, str], *, admitted: int | None = None
    ) -> float:
        """A 429: slow down the dimension that was refused, follow the answer's headers, and
        return how long to pause the key: the server's retry-after (or reset; without either,
        an exponential backoff with jitter), never over ``max_pause_s``. The caller pauses.
        ``admitted``: the refused attempt's admission number through the gate, if known."""
        key = Key.of(key)
        seconds = retry_after_seconds(headers)
        if seconds is None:
            lowered = {k.lower(): v for k, v in headers.items()}
            resets = [
                parse_duration(lowered.get(f"x-ratelimit-reset-{name}", ""))
                for name in ("requests", "tokens")
            ]
            seconds = min((r for r in resets if r is not None), default=None)
        with self.lock:
            state = self.state(key)
            if state.learners:
                state.refusals_to_ack += 1
            window = state.concurrency
            silent = not any(name.lower().startswith("x-ratelimit-") for name in headers)
            if window is not None:
                window.outcome(self._clock(), refused=True)
            if (
                window is not None
                and state.in_flight > 1  # a refused lone attempt: no count in flight did that
                and not window.spent(self._clock())  # refusing all: a spent rate, no window
                and (
                    (seconds is None and window.binds(state.in_flight))
                    or (seconds is not None and silent and window.full(state.in_flight))
                )
            ):
                # the window was full: the refusal is the window's, which now holds every
                # attempt back until one completes (the refused one waits its own retry-after).
                # Pausing the whole key as well cost a server counting 16 in flight a third of
                # its throughput without a retry-after, and 1 s per 429 with one (240 calls:
                # 7.9 s against 3.5 s). Without a retry-after, a slow-starting window's 429s
                # still pause: the pause tells the burst's later refusals apart (in_burst)
                seconds = 0.0
            if seconds is None:  # the server said nothing of when: back off, with jitter
                left = state.paused_until - self._clock()
                if left > 0:  # one burst's 429s, sent before the pause: one step, not many
                    seconds = left
                else:
                    state.throttles += 1
                    ceiling = _BACKOFF_S * 2.0 ** min(state.throttles - 1, 30)
                    seconds = min(ceiling, self.max_pause_s) * (0.5 + 0.5 * self._random())
                    if state.throttles >= 2 and window is not None:  # refused after a pause
                        window.wall(self._clock(), self.max_pause_s)
            self._slow_down(state, headers, silent, admitted)
        self._follow(key, headers, answered=False)
        return min(max(0.0, seconds), self.max_pause_s)  # untrusted: never longer than this

    def _slow_down(
        self, state: KeyState, headers: Mapping[str, str], silent: bool, admitted: int | None
    ) -> None:
        """A 429: the learned rate of the refused dimension drops (see ``guards.learn``); a
        dimension refused below its announced rate has a shorter window: its burst narrows.
        Lock held."""
        in_burst = state.paused_until > self._clock()  # sent before the last 429's pause
        if state.refused(silent, in_burst, admitted):
            return  # a refusal of a key left open (see KeyState.refused)
        refused = _refused(state, headers)
        if refused is None:
            return
        bucket, learner = state.bucket(refused), state.learners.get(refused)
        if bucket is None or learner is None:
            return
        if learner.phase == "announced":
            if admitted is not None and admitted <= state.announced_after:
                # sent before any limit was known (a zero-config start's first wave): an
                # overshoot of ours, not a shorter window nor a broken word. Read as one, it
                # froze a 10 s bucket's key at a 1 s burst for good (bench_embed_limit's 100
                # callers ran warm at 0.61 of the limit)
                return
            announced_rate = bucket.per_minute / state.limit.safety_margin
            narrower = learner.window_shorter(announced_rate, state.limit.burst_s)
            if narrower is not None:
                bucket.resize_burst(narrower)
                return  # a shorter window than the headers say: the first explanation
            lowered = learner.distrust(bucket.per_minute)
            if lowered is None:
                return  # the 429 was ours: we were sending at the announced rate
            # sending well below it and refused: it is not the limit. Nor are the other
            # dimension's headers to be believed: a server whose remaining said 10^9 left
            # was blamed for tokens when its requests were refused (least share left decides)
            rates = {bucket: lowered}
            for name, other in state.learners.items():
                held = state.bucket(name)
                if other is not learner and other.phase == "announced" and held is not None:
                    rate = other.distrust(held.per_minute)
                    if rate is not None:
                        rates[held] = rate
            for held, rate in rates.items():  # the buckets themselves: one per dimension
                held.adopt(rate)  # what the server took over the last second
                held.cap(0.0)  # it refused: its window is spent, whatever ours held
            return
        if learner.ceiling is not None:
            _lower_broken(state)
            return
        binding = learner.binding(bucket.per_minute)
        window_binds = state.concurrency is not None and state.concurrency.binds(state.in_flight)
        if silent and not window_binds:  # the burst this 429 begins refines the rates
            for each in state.learners.values():
                if each.phase != "announced":
                    each.burst()
        if state.concurrency is not None and refused == "requests" and silent:
            # a server that says nothing may count requests in flight (a gateway's or a model
            # server's queue) rather than a rate: both limits step down, and each grows back
            # only while it is used
            state.concurrency.throttled(state.in_flight, self._clock(), in_burst=in_burst)
        # a server refusing most of what comes: its rate binds, though pauses held the sends
        # below ours (its refusals counted as a window's left 6000 RPM against 600)
        spent = state.concurrency is not None and state.concurrency.spent(self._clock())
        if binding or spent:  # else the rate was not what the key ran into: leave it
            rate = learner.throttled(bucket.per_minute, spent=spent)
            if rate is not None:
                bucket.adopt(rate)

    def limits(self) -> dict[Key, dict[str, Any]]:
        """What the limiter holds for each key now: per dimension the rate per minute it uses
        (after the safety margin), the burst in seconds, where the rate comes from
        (``configured``, ``start``, ``open``, ``announced``, ``slow_start``, ``cubic``) and the
        send rate measured per minute; ``None`` for a dimension that is not limited."""
        out: dict[Key, dict[str, Any]] = {}
        with self.lock:
            for key, state in self._states.items():
                row: dict[str, Any] = {}
                for name in ("requests", "tokens"):
                    bucket, learner = state.bucket(name), state.learners.get(name)
                    row[name] = (
                        None
                        if bucket is None
                        else {
                            "per_minute": bucket.per_minute,
                            "burst_s": bucket.burst_s,
                            "source": "configured" if learner is None else learner.phase,
                            "sending_per_minute": None if learner is None else learner.measured,
                        }
                    )
                row["paused_s"] = max(0.0, state.paused_until - self._clock())
                row["in_flight"] = state.in_flight if state.concurrency is not None else None
                row["concurrency_limit"] = (
                    None if state.concurrency is None else state.concurrency.limit
                )
                out[key] = row
        return out


def _lower_broken(state: KeyState) -> None:
    """A 429 of a key whose announced limits the server broke: each such dimension comes down
    to what the server took (``Learner.refine`` within an episode, ``Learner.throttled`` for a
    new one), and holds nothing: the server refused, its window is spent whatever ours held.
    Every refusal counts, whatever the send rate: held by Retry-After pauses rather than the
    bucket, a key was "not bound" by its rate and kept 9240 RPM against 600 enforced (455
    429s for 800 calls). Both dimensions: the server's headers do not say which it enforces.
    Lock held."""
    for name, learner in state.learners.items():
        bucket = state.bucket(name)
        if bucket is None or learner.ceiling is None:
            continue
        lower = learner.refine(bucket.per_minute)  # another 429 of the episode's burst
        if lower is None:
            lower = learner.throttled(bucket.per_minute)  # a new episode
        if lower is not None:
            bucket.adopt(lower)
        bucket.cap(0.0)


def _refused(state: KeyState, headers: Mapping[str, str]) -> str | None:
    """Which dimension a 429 was for: the one the server says has least left (relative to one
    burst); without such headers, the one being used nearest its rate."""
    shares: dict[str, float] = {}
    used: dict[str, float] = {}
    for name in ("requests", "tokens"):
        bucket = state.bucket(name)
        if bucket is None:
            continue
        remaining = announced(headers, name).remaining
        if remaining is not None:
            shares[name] = remaining / max(bucket.capacity, EPSILON)
        learner = state.learners.get(name)
        if learner is not None:
            used[name] = learner.measured / max(bucket.per_minute, EPSILON)
    if shares:
        return min(shares, key=lambda n: shares[n])
    return max(used, key=lambda n: used[n]) if used else None
