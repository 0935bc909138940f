"""How a limit left on ``auto`` moves, one dimension (requests or tokens) of one key at a time.

A server that announces its limit (``x-ratelimit-limit-*``) is believed: the limiter adopts it.
Where it announces none (Azure sends only ``remaining``; vLLM, Ollama and most gateways send
nothing) the rate is found the way TCP and botocore's adaptive retry mode find a path's capacity:

- *open* (the local limiter's default): a server that has never refused is not throttled by a
  rate at all (botocore's adaptive mode is off until the first throttle, too). What bounds such
  a key is its window of attempts in flight (``Concurrency``: TCP's slow start, from ten). The
  first 429 closes the dimension: its rate becomes what the server accepted over the last
  second, and from there the curve below applies. Why: any starting rate is wrong for someone;
  500 RPM made the pool 2-5x slower than plain ``ChatOpenAI`` on every local model server;
- *slow start* (where a rate must exist from the start: processes sharing one through Redis):
  from the starting value, the rate doubles every second in which it was the
  bottleneck (the key sent at >= 80 % of it) and no 429 came; never above twice what was
  actually sent, so an idle key does not talk itself into a huge rate;
- *a 429*: the rate drops to ``BETA`` x what was being sent, and that send rate is remembered
  (``w_max``); later 429s of the same episode (within ``EPISODE_S``) do not compound;
- *after a 429*: the rate climbs back on botocore's CUBIC curve, normalised so that it is back at
  ``w_max`` after ``CUBIC_K_S`` seconds whatever the units (requests or tokens), flat around
  it, then probing above; again never above twice the send rate;
- a server that reports ``remaining`` but no limit (Azure) holds growth while less than one
  burst's worth is left: it has said the window is nearly spent.

The *burst* (how much may go at once) starts at ``burst_s`` (1 s). It widens, doubling up to a
minute, only when the server shows it allows more: a whole burst went since the last answer and
its ``remaining`` still held at least two more. It doubles at most once per answer (slow start
again), and where the limit is announced each doubling lets the level rise at once to the
margin of what the server says is left, within the new burst (``TokenBucket.resize_burst``): a
per-minute bucket's minute is reached in a few answers; and once per round trip: not again
until the attempts out when it widened have ended (``KeyState.widen_hold``), since their
answers have not seen the room it gave. A 429 of a dimension that was being
sent below its announced rate, or after the burst widened into the room the server showed, means
the server enforces a shorter window than its per-minute headers say (OpenAI documents quantised
limits, and reports `remaining` in per-minute units even then): the burst goes back to the last
one that held (the one before a widening refused within an episode of it, else ``burst_s``) and
never widens past it again for this key, so such a server costs one episode of 429s, at most
about one widened burst: against a one-second window the first widening is the one refused
(halving at each 429 instead would cost one episode per halving, each after an idle spell let a
wide burst fill). Processes sharing a limit through Redis widen the shared burst alike
(a take that had to wait is a spent burst; take.lua's ``room``).

Everything is a pure function of a clock and the calls made, so tests drive it by hand.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Literal

__all__ = [
    "BETA",
    "CUBIC_K_S",
    "EPISODE_S",
    "FIRST_PACE_S",
    "FIRST_WAIT_S",
    "INITIAL_WINDOW",
    "PACE_S",
    "WINDOW_BETA",
    "Concurrency",
    "Learner",
]

BETA = 0.7  # the rate kept after a 429 (botocore's adaptive mode; TCP CUBIC's beta)
# the window kept after a 429 (Netflix concurrency-limits' AIMD default): its drop is refined
# by the burst's refusals to what the server took at once (``Concurrency.throttled``), so it
# needs no deep cut; at 0.7 a 16-slot server's sawtooth ran at 12 for seconds after each 429
WINDOW_BETA = 0.9
_OVERSHOOT = 2  # refusals after a drop that a window's overshoot explains (see ``overshot``)
CUBIC_K_S = 3.0  # seconds to climb back to the rate a 429 interrupted
EPISODE_S = 1.0  # 429s closer together than this are one episode: one drop
STEP_S = 0.5  # the rate moves at most once per step (botocore measures in half seconds)
_SMOOTH = 0.8  # weight of the newest half second in the measured send rate
_BUSY = 0.8  # a key sending at this share of its rate is bound by it
_MAX_BURST_S = 60.0
_ACCEPTED_S = 1.0  # what the server accepted over this long is the rate an open key closes at
INITIAL_WINDOW = 10  # attempts in flight before the first answer (TCP's initial window, RFC 6928)
PACE_S = 0.04  # while callers wait, an open window doubles at least this often (see Concurrency)
# ... and before the server's first answer, once callers have waited FIRST_WAIT_S for it, this
# often: a local model's first answer takes seconds (a 1 s server left the pool 0.9 s behind
# plain ChatOpenAI at 100 callers while ten were in flight), but a cold client's own first
# request (a connection, the tokenizer's tables) takes a tenth of that, and a server that limits
# ten a second refused what the pace let out meanwhile (bench_zero_config: 77 calls failed)
FIRST_WAIT_S = 0.25
FIRST_PACE_S = 0.05

Phase = Literal["start", "open", "announced", "slow_start", "cubic"]


class Learner:
    """The learning state of one dimension. Rates are per minute, like the limits."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        floor: float = 1.0,
        burst_s: float = 1.0,
        opens: Literal["never", "at_start", "when_answered"] = "never",
    ) -> None:
        self._clock = clock
        self.floor = floor  # never below this many per minute: a rate of 0 would stall the key
        self.phase: Phase = "start"
        # "start" ends at the first answer: in "open" (the rate not applied) or, for a learner
        # that must hold a rate ("never": processes sharing one through Redis), in
        # "slow_start". "at_start": open before the first answer too (requests: the window
        # bounds the first burst); "when_answered": the starting rate bounds the first burst
        # (tokens: a window counts requests, not their size)
        self._opens = opens != "never"
        self._open_at_start = opens == "at_start"
        # while open: (time, amount) sent and answered over the last _ACCEPTED_S
        self._recent_sent: deque[tuple[float, float]] = deque()
        self._recent_answered: deque[tuple[float, float]] = deque()
        # a burst of 429s under way: (sent over the second before it, per request, refused)
        self._closing: tuple[float, float, int] | None = None
        self._burst_at = -math.inf
        self.burst_s = burst_s
        self._burst_cap = _MAX_BURST_S  # the widest burst the server has not refused
        self._narrowed_at = -math.inf  # when a 429 last narrowed the burst
        self._widened_at = -math.inf  # when the burst last widened
        self._roomy = False  # the burst widened: the server said it had room for it
        self.w_max = 0.0
        self._dropped_at = -math.inf
        self._moved_at = clock()
        # measured send rate (per minute), exponentially smoothed over half-second buckets
        self.measured = 0.0
        self._bucket_at = math.floor(clock() / STEP_S) * STEP_S
        self._bucket_sum = 0.0
        self._spent_burst = False  # a whole burst went since the last answer
        self._remaining: float | None = None  # the server's last word on what is left
        # an announced rate the server did not keep (``distrust``): a ceiling, not the rate
        self.ceiling: float | None = None

    # -- what was sent -------------------------------------------------------------------------

    def sent(self, amount: float, capacity: float, level_after: float) -> None:
        """``amount`` was taken; ``level_after`` is what the bucket holds now."""
        self._tick()
        self._bucket_sum += amount
        if level_after <= 0.05 * capacity:
            self._spent_burst = True
        now = self._clock()  # every send of the last second: what a 429's burst is measured on
        self._recent_sent.append((now, amount))
        _trim(self._recent_sent, now)

    @property
    def unrefused(self) -> bool:
        """Whether this learner opens (or is open) and has heard neither a limit nor a 429."""
        return self._opens and self.phase in ("start", "open")

    @property
    def open(self) -> bool:
        """Whether the rate is not applied: nothing announced and never refused."""
        return self.phase == "open" or (self._open_at_start and self.phase == "start")

    def _tick(self) -> None:
        now = self._clock()
        bucket = math.floor(now / STEP_S) * STEP_S
        if bucket > self._bucket_at:
            current = self._bucket_sum / (bucket - self._bucket_at) * 60.0
            self.measured = _SMOOTH * current + (1 - _SMOOTH) * self.measured
            self._bucket_at, self._bucket_sum = bucket, 0.0

    def recall(self, source: str, per_minute: float) -> None:
        """Start from a rate an earlier run learned (``guards.remember``): announced, it is
        the server's word until its next answer says otherwise; learned from 429s, the rate
        sits on CUBIC's plateau around it (the last run's drop long past), so it neither
        opens nor slow-starts again."""
        now = self._clock()
        if source == "announced":
            self.phase = "announced"
            return
        self.phase = "cubic"
        self.w_max = max(self.floor, per_minute)
        self._dropped_at = now - CUBIC_K_S
        self._moved_at = now

    # -- what the server said ------------------------------------------------------------------

    def heard(self, remaining: float | None) -> None:
        """An answer's ``remaining`` for this dimension (None: it said nothing of it)."""
        self._remaining = remaining

    def answered(
        self, per_minute: float, capacity: float, *, busy: bool | None = None
    ) -> float | None:
        """An attempt completed (anything but a 429) and no limit was announced for this
        dimension: the new rate, or None to keep ``per_minute``. ``capacity``: one burst's worth
        at the current rate. ``busy``: whether the rate binds, where the caller knows better
        than this process's send rate (a bucket shared by several processes)."""
        self._tick()
        if self.phase == "start":
            self.phase = "open" if self._opens else "slow_start"
        now = self._clock()  # every answer of the last second: what the server surely took
        self._recent_answered.append((now, 1.0))
        _trim(self._recent_answered, now)
        if self.phase == "open":
            return None
        if self.phase == "announced":
            return None
        now = self._clock()
        if now - self._moved_at < STEP_S:
            return None
        if self._remaining is not None and self._remaining < capacity:
            return None  # the server's window is nearly spent: this is no time to grow
        if not (busy if busy is not None else self.measured >= _BUSY * per_minute):
            return None  # not the bottleneck: growing would only be a guess
        cap = 2.0 * self.measured if busy is None else 2.0 * per_minute
        if self.phase == "slow_start":
            target = per_minute * 2.0 ** ((now - self._moved_at) / 1.0)
        else:
            t = (now - self._dropped_at) / CUBIC_K_S
            target = self.w_max * (1.0 + (1.0 - BETA) * (t - 1.0) ** 3)
        new = max(self.floor, min(target, cap))
        if new <= per_minute:
            return None
        self._moved_at = now
        return new

    def binding(self, per_minute: float) -> bool:
        """Whether the rate was what the key ran into: sending at half of it or more (or not
        measured yet, as in the first burst). A 429 while it was not binding was for something
        else, such as too many requests in flight."""
        self._tick()
        if self.open:
            return True
        return self.measured <= 0 or self.measured >= 0.5 * per_minute

    def throttled(self, per_minute: float, *, spent: bool = False) -> float | None:
        """A 429 of this dimension (no limit announced): the new rate, or None (same episode).
        ``spent``: the server refuses most of what comes (``Concurrency.spent``): what it
        answered over the last second, not what was sent, is what it takes. Why: a silent
        per-minute bucket past its burst takes its refill (10 a second for 600 RPM) whatever
        comes; 0.7 x the send rate per episode kept 6000 RPM for seconds, and failed calls."""
        self._tick()
        now = self._clock()
        if self.unrefused:
            return self.close()
        if now - self._dropped_at < EPISODE_S or self.phase == "announced":
            return None
        sending = self.measured if self.measured > 0 else per_minute
        if self.ceiling is not None:  # a server that broke its word: what it took, not BETA x
            return self._drop(now, min(sending, per_minute), first=False)
        if spent:
            sent, requests = self._sent_last_second(now)
            answered = self._answered_last_second(now)
            if requests and answered:
                sending = min(sending, answered * sent / requests * 60.0 / _ACCEPTED_S)
        self.w_max = min(sending, per_minute) if self.phase == "cubic" else sending
        self.w_max = max(self.w_max, self.floor)
        self.phase = "cubic"
        self._dropped_at = self._moved_at = now
        return max(self.floor, BETA * self.w_max)

    def close(self) -> float | None:
        """A 429 of an open key (this dimension's or another's: a silent server does not say
        which): the rate from now on, or None to stay open when nothing was answered in the
        last second (the refusal then says nothing of a rate: a server that counts requests in
        flight refuses at once and answers later; the window steps down instead).

        The rate is what was sent over the last second less what the server refused of it:
        the first refusal takes one request's worth off, and each further 429 of the same burst
        (``refine``) another, so a burst of 30 with 20 refused closes at 10 a second. Why not
        the answers counted so far: they lag by the latency (100 ms answers, a refusal at
        150 ms: 10 answered of the 50 the server would take), and the rate closed at a fifth
        of the server's. The 429 episode starts here: CUBIC climbs back to the rate, then
        probes above it."""
        now = self._clock()
        if not self._answered_last_second(now):
            return None  # keep any burst under way (``burst``): this says nothing new
        self.estimate()
        if self._closing is None:
            return None
        self.phase = "cubic"
        self._dropped_at = self._moved_at = now
        self._recent_sent.clear()
        return self.w_max

    def estimate(self) -> None:
        """What ``close`` would close at (``w_max``), without closing: a key whose refusals may
        be its window's stays open (see ``KeyState.refused``), and its burst's refusals refine
        this (``refine``) until ``close_late`` applies it or the episode ends. Nothing is
        estimated when nothing was answered in the last second."""
        now = self._clock()
        sent, requests = self._sent_last_second(now)
        if not (requests and self._answered_last_second(now)):
            self._closing = None
            return
        mean = sent / requests
        self._closing, self._burst_at = (sent, mean, 1), now
        self.w_max = max(self.floor, (sent - mean) * 60.0 / _ACCEPTED_S)

    def close_late(self) -> float | None:
        """Close at the estimate of the episode under way (see ``estimate``), or as ``close``
        without one: the refusals were a spent rate's after all."""
        if self._closing is None or self._clock() - self._burst_at >= EPISODE_S:
            return self.close()
        now = self._clock()
        self.phase = "cubic"
        self._dropped_at = self._moved_at = now
        self._recent_sent.clear()
        return self.w_max

    def _sent_last_second(self, now: float) -> tuple[float, int]:
        """(amount, requests) sent over the last ``_ACCEPTED_S``."""
        _trim(self._recent_sent, now)
        return sum(amount for _, amount in self._recent_sent), len(self._recent_sent)

    def _answered_last_second(self, now: float) -> int:
        _trim(self._recent_answered, now)
        return len(self._recent_answered)

    def burst(self) -> None:
        """A 429 that may begin a burst of them (a silent server refusing what a bucket let go
        into its spent window): remember the last second's sends, for ``refine``."""
        now = self._clock()
        if self._closing is not None and now - self._burst_at < EPISODE_S:
            return  # one under way
        sent, requests = self._sent_last_second(now)
        self._closing = (sent, sent / requests, 1) if requests else None
        self._burst_at = now

    def refine(self, per_minute: float) -> float | None:
        """Another 429 of the burst that closed this dimension or began with ``burst`` (sent
        before the pause the first one began): one more request's worth the server refused of
        the last second's sends. The lower rate, or None (no such burst under way, or the
        estimate is not below ``per_minute``, the rate held now). Why: a per-minute bucket
        that says nothing takes a whole first burst, so the key closes far above its steady
        rate; the next burst is refused but for the refill, and this brings the rate down to
        what the server took in one episode, not in one 0.7 step per second."""
        if self._closing is None:
            return None
        if self._clock() - self._burst_at >= EPISODE_S:
            self._closing = None
            return None
        sent, mean, refused = self._closing
        refused += 1
        self._closing = (sent, mean, refused)
        # never below what was answered over the last second: a client too busy to send its
        # burst within a second (1000 at once, cold) sees refusals of sends older than that,
        # and sends less refusals went to the floor (a 1 RPM key)
        now = self._clock()
        took = max(sent - refused * mean, self._answered_last_second(now) * mean)
        accepted = max(self.floor, took * 60.0 / _ACCEPTED_S)
        if self.unrefused:  # an estimate kept aside (see ``estimate``): the rate is not applied
            self.w_max = min(self.w_max, accepted)
            return None
        if accepted >= per_minute:
            return None
        self.w_max = min(self.w_max, accepted) if self.w_max > 0 else accepted
        if self.phase != "cubic":
            self.phase = "cubic"
            self._dropped_at = self._moved_at = self._clock()
        return accepted

    def follow(self, per_minute: float, current: float) -> None:
        """Another process sharing this limit moved it to ``per_minute`` (from ``current``): a
        lower rate is a 429 it saw, and this learner climbs back from it as from its own."""
        if per_minute < current and self.phase != "announced":
            now = self._clock()
            self.phase = "cubic"
            self.w_max = max(self.floor, per_minute / BETA)
            self._dropped_at = self._moved_at = now

    def announced(self) -> float:
        """The server announced this dimension's limit: it, not this learner, sets the rate.
        Returns what was sent over the last second while the dimension was open (nothing
        else), which the announced rate's bucket must count as spent: the server did. The
        last second's sends and answers are kept: if the server breaks its word at once
        (``distrust``), they are what it took (cleared, a 100-caller burst's refusal measured
        the ten sent since the first answer, and kept 540 RPM of the 3000 allowed)."""
        spent = 0.0
        if self.open:
            spent, _ = self._sent_last_second(self._clock())
        self.phase = "announced"
        return spent

    # -- the burst -----------------------------------------------------------------------------

    def widen(self, remaining: float | None, capacity: float) -> float | None:
        """After an answer: the burst in seconds if it should grow, else None. It doubles
        when a whole burst went since the last answer and the server still had two more left:
        once per answer, as TCP's slow start grows per acknowledgement, so a minute's burst
        is reached in about six answers, not six spent seconds."""
        spent, self._spent_burst = self._spent_burst, False
        if remaining is None or not spent or self.burst_s >= self._burst_cap:
            return None
        if remaining >= 2.0 * capacity:
            self._roomy = True
            self._widened_at = self._clock()
            self.burst_s = min(self._burst_cap, self.burst_s * 2.0)
            return self.burst_s
        return None

    def window_shorter(self, announced_per_minute: float, base_burst_s: float) -> float | None:
        """A 429 with an announced limit: if we were sending below it, the server's window is
        shorter than a minute. The burst to use now, or None, and never wider again: within
        an episode of a widening, the burst before it (the last that held: TCP's slow-start
        threshold; against a server whose window is one second the first widening is the one
        refused, so this is ``base_burst_s`` there too); otherwise ``base_burst_s``. Before,
        a refused widening went to ``base_burst_s`` as well: a 100-caller start that
        overshot a 10 s bucket once, widening from 4 s to 8, ran at 1 s ever after."""
        self._tick()
        now = self._clock()
        if now - self._narrowed_at < EPISODE_S:
            return None  # the rest of the burst that was refused: narrowed once for it
        if self.measured >= announced_per_minute and not self._roomy:
            return None  # we were over the limit itself: nothing learned about the window
        # below the rate, or refused after the server said it had room for a wider burst
        # (the room the widening added went at once, faster than the rate): either way the
        # window the server enforces is shorter than the one being used
        widening = self._roomy and now - self._widened_at < EPISODE_S
        held = self.burst_s / 2.0 if widening else base_burst_s
        narrower = max(base_burst_s, min(held, self._burst_cap))
        self._burst_cap = narrower
        self._roomy = False
        self._narrowed_at = now
        if self.burst_s == narrower:
            return None
        self.burst_s = narrower
        return narrower

    def distrust(self, announced_per_minute: float) -> float | None:
        """A 429 of an announced dimension, its burst already one second's worth: if we were
        sending below ``_BUSY`` of the announced rate, the server enforces less than it says
        (an organisation's limit in the headers while a project's lower one applies). The
        announced value becomes a ceiling (``ceiling``) and the rate is learned below it from
        429s, from what the server took over the last second (``_drop``). The new rate, or
        None (the 429 was ours)."""
        self._tick()
        now = self._clock()
        # before the first half second is measured, the last second's sends say the same
        sending = self.measured or self._sent_last_second(now)[0] * 60.0 / _ACCEPTED_S
        if sending <= 0 or sending >= _BUSY * announced_per_minute:
            return None
        if now - self._dropped_at < EPISODE_S:
            return None
        self.ceiling = announced_per_minute
        return self._drop(now, sending, first=True)

    def _drop(self, now: float, sending: float, *, first: bool) -> float:
        """A 429 of a dimension whose announced limit the server broke (``ceiling``): the rate
        becomes what was sent over the last second less the one refused, never below what was
        answered in it, and each further 429 of the episode takes one more off (``refine``),
        as an open key closes. Why not ``BETA`` x what was sent: 100 in flight against an
        announced 10^9 while 50 a second were kept sent 1000 a second, and 0.7 x that took
        eight episodes of 429s to come down, each failing calls. Why not only the answers:
        they lag by the latency, and the first refusal came before most of the burst's
        answers (540 RPM kept where the server took 3000). In a later episode (not ``first``)
        the answers of the last second are the measure: sends still in flight have no fate
        yet, and against a per-minute bucket past its burst (600 taken, then 10 a second)
        one request off per 429 took ten episodes to come down from 24,000 RPM. ``BETA`` x
        ``sending`` when nothing was sent over the last second."""
        sent, requests = self._sent_last_second(now)
        self.phase = "cubic"
        self._dropped_at = self._moved_at = now
        if not requests:
            self.w_max = max(self.floor, sending)
            return max(self.floor, BETA * self.w_max)
        mean = sent / requests
        self._closing, self._burst_at = (sent, mean, 1), now
        answered = self._answered_last_second(now) * mean
        took = max(sent - mean, answered) if first or not answered else answered
        self.w_max = max(self.floor, min(sending, took * 60.0 / _ACCEPTED_S))
        return self.w_max


class Concurrency:
    """How many attempts of one key may be in flight, for a server that announces no limits.

    Two regimes, as TCP's congestion window:

    - *slow start* (``initial`` given: the local limiter's open keys, see ``Learner``): from
      ``INITIAL_WINDOW`` before the first answer, each attempt that completes while the window
      is in use adds one (doubling per round trip, clocked by the answers); and once the
      server has answered, while callers wait, the window doubles at least every ``PACE_S``
      whatever the round trip, so a server whose answers take seconds (a local model) is not
      ramped over seconds. Before the first answer little is known (a per-second limit of
      ten, a slow first connection): the initial window holds for ``FIRST_WAIT_S``, then
      doubles every ``FIRST_PACE_S``, so a server that answers in milliseconds is never sent
      more than ten before it has answered, and a slow one is not left idle for its whole
      first round trip. It ends at
      ``ceiling`` (off: only ``max_parallel_llm_calls`` bounds the key), when the server
      announces its limits (the rate then bounds the key), or at the first 429;
    - *AIMD* (Netflix concurrency-limits' AIMD limit), from the first 429 of a silent server
      (a gateway's or a self-hosted model's queue counts requests *in flight*, which a rate
      does not see): on a 429 the limit drops to ``WINDOW_BETA`` x what was in flight; each attempt
      that completes adds ``1 / limit`` (one more per round of answers) up to ``ceiling``,
      where it turns off again.

    ``credit``: while slow-starting on a server that reports ``remaining`` but no limit (Azure),
    at most that many more are sent until an answer says more; with nothing in flight one goes
    anyway, so an exhausted window is found by one 429 (with its retry-after), not by a stall.

    Latency is not a signal here: an LLM's latency follows the tokens it writes, not the
    server's load, so Gradient2's latency ratios would read long answers as congestion.
    """

    def __init__(
        self,
        ceiling: int,
        *,
        initial: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.ceiling = ceiling
        self.limit: float | None = None if initial is None else float(min(initial, ceiling))
        self.slow_start = initial is not None
        self.credit: float | None = None
        self._clock = clock
        self._dropped_at = -math.inf
        self._at_drop, self._refused = 0.0, 0  # in flight at the episode's drop; its 429s
        self._drop_number = 0  # attempts admitted by the drop (see ``after_drop``)
        self._overshoots = 0  # refusals of attempts admitted after the drop
        # after the drop of an open key: attempts let in since, None when not probing; at most
        # ``_allowed`` of them, which each answer of one raises by two (see ``throttled``);
        # ``windowed``: probing reached the window, so the server's refusals were its window's
        self._probes: int | None = None
        self._allowed = 0
        self.windowed = False
        self._blocked_at: float | None = None  # since when callers have been waiting
        self._blocked_limit = 0.0  # the window when they started to
        self._answered = False  # a slower pace before the server's first answer
        # a silent wall (see ``wall``): one attempt at a time until this time, or an answer
        self._walled_until = -math.inf
        self._outcomes: deque[tuple[float, float]] = deque()  # (time, 1 refused / 0 answered)

    def throttled(
        self,
        in_flight: int,
        now: float,
        *,
        in_burst: bool = False,
        admissions: int = 0,
        probe: bool = False,
    ) -> None:
        """A 429 with ``in_flight`` out (the refused attempt included). ``in_burst``: it was
        sent before the pause the previous 429 of this episode began (nothing new went out
        since), so the episode's refusals tell how many of what was in flight the server took
        at once: the limit goes no higher than that. ``admissions``: attempts admitted so far
        (a drop remembers it: see ``after_drop``). ``probe``: the refusal may be a spent
        rate's (the key is open): after the drop, ``_OVERSHOOT`` + 1 attempts go, and each
        answer of one lets two more go (TCP's slow start), until the window is reached. A spent
        rate refuses them (``overshot``) or answers them at its refill; the window's worth
        that would have gone at once cost a 50-a-second server 16 more 429s."""
        self.slow_start = False
        self.credit = None
        self._blocked_at = None
        if now - self._dropped_at < EPISODE_S:  # the 429s of one burst are one signal
            if in_burst and self.limit is not None:
                self._refused += 1
                self.limit = max(1.0, min(self.limit, self._at_drop - self._refused))
            return
        self._dropped_at, self._drop_number, self._overshoots = now, admissions, 0
        self._probes = 0 if probe and not self.windowed else None
        self._allowed = _OVERSHOOT + 1
        base = in_flight if self.limit is None else min(in_flight, self.limit)
        self._at_drop, self._refused = float(in_flight), 1
        self.limit = max(1.0, WINDOW_BETA * max(base, 1))

    def in_episode(self, now: float) -> bool:
        """Whether a drop's episode is under way: its 429s are one signal."""
        return now - self._dropped_at < EPISODE_S

    def after_drop(self, admitted: int, now: float) -> bool:
        """Whether the attempt admitted ``admitted``-th went after this episode's drop (it was
        let in under the stepped-down window)."""
        return self.in_episode(now) and admitted > self._drop_number

    def overshot(self, in_flight: int) -> bool:
        """A refusal of an attempt admitted after the drop, with ``in_flight`` out (itself
        included): the window, stepped down to what the server took at once, is still over
        (what was in flight counted answers on their way back) and goes down one more; or the
        server refuses whatever comes: a spent rate. True (the latter) at the third, or at
        once with fewer in flight than the window less that overshoot: a server counting
        requests in flight refuses only a full window."""
        self._refused += 1
        self._overshoots += 1
        below = self.limit is not None and in_flight < self.limit - _OVERSHOOT
        if self.limit is not None:
            self.limit = max(1.0, self.limit - 1.0)
        if self._overshoots <= _OVERSHOOT and not below:
            return False
        self._probes = None  # a spent rate: the rate holds the key back from now on
        return True

    def answered(self, admitted: int, in_flight: int) -> None:
        """The attempt admitted ``admitted``-th was answered (not refused), with ``in_flight``
        out: while probing, one let in after the drop lets two more go; one answered with
        the window (less its overshoot) in flight shows the server holding a full window and
        taking new work as its own completed, as a window does: probing is over. (A spent
        rate that refills answers probes too, but refuses before the window fills.)"""
        if self._probes is None or admitted <= self._drop_number:
            return
        self._allowed += 2
        if self.limit is None or in_flight >= self.limit - _OVERSHOOT:
            self._probes = None
            self.windowed = True

    def announced(self) -> None:
        """The server announced its limits: a slow-starting window has nothing more to find."""
        if self.slow_start:
            self._off()

    def completed(self, in_flight: int) -> None:
        """An attempt came back with ``in_flight`` (itself included) out: the limit grows only
        while it is being used (half of it, as Netflix's AIMD), not while idle."""
        if not self._answered:
            if self._blocked_at is not None and self._clock is not None:
                # the faster pace starts now, from the window the first pace made: counted from
                # when callers began to wait, it jumped (2^10 for 0.4 s) to the ceiling at once
                self.pace()
                self._blocked_at = self._clock()
                self._blocked_limit = self.limit if self.limit is not None else 0.0
            self._answered = True
        in_episode = self._clock is not None and self._clock() - self._dropped_at < EPISODE_S
        if in_episode and not self.slow_start:
            return  # the drop's episode: answers of what was in flight before it
        if self.limit is not None and in_flight * 2 >= self.limit:
            self.limit += 1.0 if self.slow_start else 1.0 / self.limit
            if self.limit >= self.ceiling:
                self._off()

    def heard(self, remaining: float | None, in_flight: int) -> None:
        """An answer's ``remaining`` requests (None: it said nothing of them), with
        ``in_flight`` out, the answered one included. The others may not have reached the
        server when it counted: they are charged against what it said is left (never looser
        than our own view; answers also come back out of order)."""
        if self.slow_start:
            self.credit = None if remaining is None else remaining - max(0, in_flight - 1)

    def binds(self, in_flight: int) -> bool:
        """Whether a learned (AIMD) limit is what holds the key: all of it in flight."""
        return not self.slow_start and self.limit is not None and in_flight >= int(self.limit)

    def full(self, in_flight: int) -> bool:
        """Whether the window, slow-starting or learned, is all in flight: a refusal now is
        the window's to answer (it holds the next attempts back), not a pause of the key."""
        return self.limit is not None and in_flight >= int(self.limit)

    def recall(self, limit: float | None, slow_start: bool) -> None:
        """Start from the window an earlier run learned (``guards.remember``): ``None`` is
        off (the server took all that was sent, or announced its limits); else that many in
        flight, slow-starting from there if it still was, AIMD if a 429 had set it."""
        if limit is None:
            self._off()
            return
        self.limit = float(min(max(1.0, limit), self.ceiling))
        self.slow_start = slow_start
        self._answered = True  # the first answer's slower pace is for a server never heard

    def outcome(self, now: float, *, refused: bool) -> None:
        """An attempt was answered or refused (a 429) at ``now``: see ``spent``."""
        self._outcomes.append((now, 1.0 if refused else 0.0))
        _trim(self._outcomes, now)

    def spent(self, now: float) -> bool:
        """Whether the server refuses most of what comes: over the last second, more than
        twice as many refusals as answers (beyond a window's overshoot). A server counting
        requests in flight refuses what goes over its count and keeps answering the rest; a
        spent rate (a per-minute bucket past its burst) refuses all but its refill, and its
        refusals read as a full window's kept the key from pausing (no Retry-After: each 429
        was retried at once, into the same wall)."""
        _trim(self._outcomes, now)
        refused = sum(r for _, r in self._outcomes)
        return refused > 2.0 * (len(self._outcomes) - refused) + _OVERSHOOT

    def wall(self, now: float, hold_s: float) -> None:
        """The server refused again after a backoff's pause, and says nothing of when to come
        back: a spent window (a gateway's per-minute quota) refuses whatever comes until it
        resets. Until an answer (``unwall``), or ``hold_s`` from the first such refusal, one
        attempt goes at a time, one per backoff pause, and the callers behind it wait in the
        gate without spending their attempts. Why: everyone the window held went at each
        pause's end, into the same wall, and a silent 600-a-minute gateway failed 143 of 800
        calls (plain ``ChatOpenAI``: 150) on spent retries. ``hold_s`` bounds what a server
        that refuses for good can hold a caller: after it, attempts fail as before."""
        if self._walled_until == -math.inf:
            self._walled_until = now + hold_s

    def unwall(self) -> None:
        """An answer: the wall is over (the window admits as it did)."""
        self._walled_until = -math.inf

    @property
    def walled(self) -> bool:
        return self._clock is not None and self._clock() < self._walled_until

    def admits(self, in_flight: int) -> bool:
        if in_flight > 0 and self._walled_until != -math.inf and self.walled:
            return False  # one probe at a time into a spent window (see ``wall``)
        if self.credit is not None and self.credit < 1 and in_flight > 0:
            return False
        if self._probes is not None and self._probes >= self._allowed and in_flight > 0:
            return False  # probing after a drop (see ``throttled``)
        return self.limit is None or in_flight < max(1, int(self.limit))

    def admitted(self) -> None:
        if self.credit is not None:
            self.credit -= 1
        if self._probes is not None:
            self._probes += 1

    # -- the pace of slow start while callers wait ---------------------------------------------

    def blocked(self) -> float | None:
        """A caller found the window full: seconds until the pace lets one more in (None: it
        does not apply, out of slow start)."""
        if not self.slow_start or self.limit is None or self._clock is None:
            return None
        now = self._clock()
        if self._blocked_at is None:
            self._blocked_at, self._blocked_limit = now, self.limit
        self.pace()
        if self.limit is None:
            return None
        wanted = (int(self.limit) + 1) / self._blocked_limit
        return max(0.0, self._paced_from() + self._pace_s() * math.log2(wanted) - now)

    def _pace_s(self) -> float:
        return PACE_S if self._answered else FIRST_PACE_S

    def _paced_from(self) -> float:
        """When the pace started: when callers began to wait, or before the first answer,
        ``FIRST_WAIT_S`` later."""
        assert self._blocked_at is not None
        return self._blocked_at + (0.0 if self._answered else FIRST_WAIT_S)

    def pace(self) -> None:
        """Apply the pace: the window is at least what doubling every ``PACE_S`` since callers
        started waiting makes it (before the first answer: every ``FIRST_PACE_S`` from
        ``FIRST_WAIT_S`` after they started)."""
        if not self.slow_start or self._blocked_at is None or self._clock is None:
            return
        assert self.limit is not None
        elapsed = max(0.0, self._clock() - self._paced_from())
        floor = self._blocked_limit * 2.0 ** min(elapsed / self._pace_s(), 30.0)
        if floor > self.limit:
            self.limit = floor
            if self.limit >= self.ceiling:
                self._off()

    def unblocked(self) -> None:
        """Nobody waits any more: the pace starts over from the window of the next wait."""
        self._blocked_at = None

    def _off(self) -> None:
        self.limit = None
        self.slow_start = False
        self.credit = None
        self._blocked_at = None


def _trim(recent: deque[tuple[float, float]], now: float) -> None:
    while recent and recent[0][0] < now - _ACCEPTED_S:
        recent.popleft()
