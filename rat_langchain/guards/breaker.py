"""CircuitBreaker with Resilience4j's contract: fail fast while an endpoint is unhealthy.

Why our own: no maintained asyncio breaker exists on PyPI (pybreaker serialises calls under a lock
and supports only Tornado for async; purgatory admits every call while half-open).

Contract: a count-based sliding window of the last ``window_size`` calls; once it holds at least
``minimum_calls``, the circuit opens when the failure rate or the slow-call rate reaches its
threshold, and also after ``consecutive_failures`` failures in a row. Open → half-open after a wait
that doubles on each re-opening (capped at ``max_wait_s``); half-open admits ``half_open_permits``
probes whose outcomes decide closed or open again. Only transient failures count (timeouts,
connection errors, 5xx, slow calls); the caller's errors (400/401/403/404/422) count as neither; a
429 is the rate limiter's business, except ``insufficient_quota``, which forces the circuit open.

Size: one module of ~430 lines because it is one state machine (window, states, probes,
listeners) whose transitions share one lock; the registry and the permit scope are a screen
each and exist only for it.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from rat_langchain.config import CircuitBreakerConfig, KeysConfig
from rat_langchain.errors import CircuitOpenError
from rat_langchain.guards._keytable import KeyTable
from rat_langchain.guards.classify import Outcome, classify
from rat_langchain.guards.key import Key, KeyLike

__all__ = [
    "BreakerRegistry",
    "CircuitBreaker",
    "CircuitOpenError",
    "Outcome",
    "State",
    "StateChange",
    "classify",
]


REMOTE_REASON = "opened by another process"
# One default per setting: the config model's (performance.circuit_breaker).
_DEFAULTS = CircuitBreakerConfig()
_KEYS = KeysConfig()


class State(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


@dataclass(frozen=True)
class StateChange:
    """One transition, as passed to listeners."""

    name: str
    old: State
    new: State
    at: float
    reason: str


class _Permit:
    """One admitted call. Exactly one of ``record`` / ``release`` takes effect."""

    __slots__ = ("_breaker", "_done", "_generation", "probe", "started")

    def __init__(self, breaker: CircuitBreaker, probe: bool, generation: int) -> None:
        self._breaker = breaker
        self.probe = probe
        self._generation = generation
        self.started = breaker._clock()
        self._done = False

    def restart(self) -> None:
        """Start timing now (after a wait that is not the call's own, e.g. for the limiter)."""
        self.started = self._breaker._clock()

    def record(self, outcome: Outcome, duration: float | None = None) -> None:
        if self._done:
            return
        self._done = True
        elapsed = self._breaker._clock() - self.started if duration is None else duration
        self._breaker._record(self, outcome, elapsed)

    def release(self) -> None:
        """The call never completed (cancelled): give a probe permit back, record nothing."""
        if self._done:
            return
        self._done = True
        self._breaker._release(self)


class _Scope:
    """``with breaker.permit() as permit`` or ``async with``: a class, not a generator-based
    context manager, because every guarded call enters one (a generator costs a few
    microseconds more)."""

    __slots__ = ("_breaker", "_permit")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    def __enter__(self) -> _Permit:
        self._permit = self._breaker.acquire()
        return self._permit

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self._permit.record(Outcome.SUCCESS)
        elif isinstance(exc, Exception):
            self._permit.record(self._breaker.classifier(exc))
        else:  # CancelledError, KeyboardInterrupt: the call did not complete
            self._permit.release()

    async def __aenter__(self) -> _Permit:
        return self.__enter__()

    async def __aexit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        self.__exit__(kind, exc, tb)


class CircuitBreaker:
    """A circuit breaker for one (endpoint, model), shared by everything that calls it.

    Example::

        breaker = CircuitBreaker("api.openai.com/gpt-4o-mini", wait_s=5)
        async with breaker.permit():         # raises CircuitOpenError at once while open
            await client.chat.completions.create(...)

    The clock is injectable, so state logic is tested without sleeping.
    """

    def __init__(
        self,
        name: str = "default",
        *,
        window_size: int = _DEFAULTS.window_size,
        minimum_calls: int = _DEFAULTS.minimum_calls,
        failure_rate_threshold: float = _DEFAULTS.failure_rate_threshold,
        slow_call_rate_threshold: float = _DEFAULTS.slow_call_rate_threshold,
        slow_call_duration_s: float = _DEFAULTS.slow_call_duration_s,
        consecutive_failures: int = _DEFAULTS.consecutive_failures,
        wait_s: float = _DEFAULTS.wait_s,
        max_wait_s: float = _DEFAULTS.max_wait_s,
        half_open_permits: int = _DEFAULTS.half_open_permits,
        classifier: Callable[[BaseException | None], Outcome] = classify,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_size < 1 or minimum_calls < 1 or half_open_permits < 1:
            raise ValueError("window_size, minimum_calls and half_open_permits must be >= 1")
        if not (0 < failure_rate_threshold <= 1 and 0 < slow_call_rate_threshold <= 1):
            raise ValueError("failure/slow-call rate thresholds must be in (0, 1]")
        if wait_s <= 0 or max_wait_s < wait_s:
            raise ValueError("wait_s must be > 0 and max_wait_s >= wait_s")
        self.name = name
        self.window_size = window_size
        self.minimum_calls = min(minimum_calls, window_size)
        self.failure_rate_threshold = failure_rate_threshold
        self.slow_call_rate_threshold = slow_call_rate_threshold
        self.slow_call_duration_s = slow_call_duration_s
        self.consecutive_failures = consecutive_failures
        self.wait_s = wait_s
        self.max_wait_s = max_wait_s
        self.half_open_permits = half_open_permits
        self.classifier = classifier
        self._clock = clock
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._window: deque[tuple[bool, bool]] = deque()  # (failed, slow), newest last
        self._window_failed = 0  # running counts, so recording a call is O(1)
        self._window_slow = 0
        self._streak = 0
        self._opened_at = 0.0
        self._open_for = wait_s
        self._reopenings = 0
        self._probes_out = 0
        self._probe_results: list[tuple[bool, bool]] = []
        self._generation = 0
        self._listeners: list[Callable[[StateChange], None]] = []
        self.transitions: Counter[tuple[State, State]] = Counter()
        self.calls: Counter[str] = Counter()
        self.shared: Any = None  # a SharedBreakerState when openings are shared (Redis)
        self.shared_name: str | None = None  # its name there (a Key's id), if not ``name``
        self.used_at = clock()  # the last call admitted (a registry forgets the longest unused)

    @classmethod
    def from_config(cls, config: CircuitBreakerConfig, name: str, **kwargs: Any) -> CircuitBreaker:
        fields = config.model_dump(exclude={"enabled", "share_open_state"})
        return cls(name, **fields, **kwargs)

    # -- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        with self._lock:
            change = self._maybe_half_open()
            state = self._state
        self._emit(change)
        return state

    def add_listener(self, listener: Callable[[StateChange], None]) -> None:
        """``listener(change)`` runs on every transition (keep it quick; it runs under the call)."""
        self._listeners.append(listener)

    def _transition(self, new: State, reason: str) -> StateChange | None:
        old = self._state
        if old == new:
            return None
        self._state = new
        self._generation += 1
        self._window.clear()
        self._window_failed = self._window_slow = 0
        self._streak = 0
        self._probes_out = 0
        self._probe_results = []
        if new == State.OPEN:
            self._opened_at = self._clock()
        self.transitions[(old, new)] += 1
        return StateChange(self.name, old, new, self._clock(), reason)

    def _emit(self, change: StateChange | None) -> None:
        if change is not None:
            for listener in self._listeners:
                listener(change)

    def _open(self, reason: str) -> StateChange | None:
        """Open, with a wait that doubles on each re-opening without a close in between."""
        self._open_for = min(self.wait_s * (2**self._reopenings), self.max_wait_s)
        self._reopenings += 1
        return self._transition(State.OPEN, reason)

    def _maybe_half_open(self) -> StateChange | None:
        """Open turns half-open lazily, on the first look after the wait (as Resilience4j)."""
        if self._state == State.OPEN and self._clock() >= self._opened_at + self._open_for:
            return self._transition(State.HALF_OPEN, f"waited {self._open_for:.2f}s")
        return None

    # -- admission -----------------------------------------------------------------------------

    def acquire(self) -> _Permit:
        """Admit one call or raise :class:`CircuitOpenError`. Pair with ``record``/``release``."""
        with self._lock:
            change = self._maybe_half_open()
            state = self._state
            permit: _Permit | None = None
            if state in (State.CLOSED, State.DISABLED):
                permit = _Permit(self, False, self._generation)
            elif state == State.HALF_OPEN and self._probes_out < self.half_open_permits:
                self._probes_out += 1
                permit = _Permit(self, True, self._generation)
            if permit is None:
                self.calls["rejected"] += 1
                error = self._open_error(state)
            else:
                self.calls["permitted"] += 1
                self.used_at = self._clock()
        self._emit(change)
        if permit is None:
            raise error
        return permit

    def _open_error(self, state: State) -> CircuitOpenError:
        if state == State.FORCED_OPEN:
            return CircuitOpenError(self.name, state, None, None)
        if state == State.HALF_OPEN:  # all probe permits are out: try again shortly
            now = self._clock()
            return CircuitOpenError(self.name, state, now + self.wait_s, self.wait_s)
        retry_at = self._opened_at + self._open_for
        return CircuitOpenError(self.name, state, retry_at, max(0.0, retry_at - self._clock()))

    def _record(self, permit: _Permit, outcome: Outcome, duration: float) -> None:
        with self._lock:
            change = self._record_locked(permit, outcome, duration)
        self._emit(change)

    def _record_locked(
        self, permit: _Permit, outcome: Outcome, duration: float
    ) -> StateChange | None:
        self.calls[outcome.value] += 1
        if self._state == State.DISABLED:
            return None
        if outcome == Outcome.FORCE_OPEN:
            if self._state == State.FORCED_OPEN:
                return None
            return self._open("insufficient_quota: the account is out of credit")
        if permit._generation != self._generation:
            return None  # a call admitted before the last transition: its result is stale
        if outcome == Outcome.IGNORED:
            if permit.probe:
                self._probes_out -= 1
            return None
        failed = outcome == Outcome.FAILURE
        slow = duration >= self.slow_call_duration_s
        if slow:
            self.calls["slow"] += 1
        if self._state == State.HALF_OPEN:
            self._probe_results.append((failed, slow))
            if len(self._probe_results) < self.half_open_permits:
                return None
            probes = self._probe_results
            failed_probes = sum(f for f, _ in probes)
            if self._trips(failed_probes, sum(s for _, s in probes), len(probes)):
                return self._open("half-open probes failed")
            self._reopenings = 0
            return self._transition(State.CLOSED, "half-open probes succeeded")
        if self._state != State.CLOSED:
            return None
        self._window.append((failed, slow))
        self._window_failed += failed
        self._window_slow += slow
        if len(self._window) > self.window_size:
            old_failed, old_slow = self._window.popleft()
            self._window_failed -= old_failed
            self._window_slow -= old_slow
        self._streak = self._streak + 1 if failed else 0
        if self._streak >= self.consecutive_failures:
            return self._open(f"{self._streak} consecutive failures")
        n = len(self._window)
        if n >= self.minimum_calls and self._trips(self._window_failed, self._window_slow, n):
            return self._open(self._rate_reason())
        return None

    def _trips(self, failed: int, slow: int, calls: int) -> bool:
        return calls > 0 and (
            failed / calls >= self.failure_rate_threshold
            or slow / calls >= self.slow_call_rate_threshold
        )

    def _rate_reason(self) -> str:
        n = len(self._window)
        return f"{self._window_failed}/{n} failed, {self._window_slow}/{n} slow in the window"

    def _release(self, permit: _Permit) -> None:
        with self._lock:
            if permit.probe and permit._generation == self._generation:
                self._probes_out -= 1

    # -- use -----------------------------------------------------------------------------------

    def permit(self) -> _Scope:
        """Admit, time and classify one call, with ``with`` or ``async with``; a cancelled
        call records nothing."""
        return _Scope(self)

    @property
    def open_for_s(self) -> float:
        """How long the current (or last) opening lasts."""
        return self._open_for

    def open_remotely(self, seconds: float) -> None:
        """Another process opened this breaker for ``seconds`` more: fail fast here too, for at
        most this breaker's ``max_wait_s`` (the Redis value is untrusted). Only a closed breaker
        follows (a half-open one is already probing on its own)."""
        with self._lock:
            if self._state != State.CLOSED:
                return
            # a peer's (or a tampered) opening lasts at most what this process would open for
            self._open_for = min(max(0.0, seconds), self.max_wait_s)
            change = self._transition(State.OPEN, f"{REMOTE_REASON} ({seconds:.2f} s left)")
        self._emit(change)

    # -- operator controls ---------------------------------------------------------------------

    def force_open(self) -> None:
        with self._lock:
            change = self._transition(State.FORCED_OPEN, "forced open by operator")
        self._emit(change)

    def disable(self) -> None:
        with self._lock:
            change = self._transition(State.DISABLED, "disabled by operator")
        self._emit(change)

    def reset(self) -> None:
        """Back to closed with an empty window and the initial wait."""
        with self._lock:
            self._reopenings = 0
            change = self._transition(State.CLOSED, "reset by operator")
        self._emit(change)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            change = self._maybe_half_open()
            snapshot = {
                "name": self.name,
                "state": self._state.value,
                "window": len(self._window),
                "failures_in_window": self._window_failed,
                "open_for_s": self._open_for,
                "transitions": {
                    f"{a.value}->{b.value}": n for (a, b), n in self.transitions.items()
                },
                "calls": dict(self.calls),
            }
        self._emit(change)
        return snapshot

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state.value})"


class BreakerRegistry:
    """One breaker per key (by default (endpoint, model)), created on first use from the config."""

    def __init__(
        self,
        config: CircuitBreakerConfig | None = None,
        *,
        shared: Any = None,
        listeners: Iterable[Callable[[StateChange], None]] = (),
        max_keys: int = _KEYS.max_keys,
        idle_s: float = _KEYS.idle_s,
        **kwargs: Any,
    ) -> None:
        """``max_keys`` / ``idle_s`` (``performance.keys``): closed breakers unused that long,
        or the longest unused past the cap, are forgotten; one that is not closed never is."""
        self.config = config or CircuitBreakerConfig()
        self.shared = shared  # a SharedBreakerState: openings published to other processes
        self.listeners = list(listeners)  # added to every breaker, e.g. metrics
        self._kwargs = kwargs
        self._breakers: KeyTable[CircuitBreaker] = KeyTable(
            self._new,
            busy=lambda breaker: breaker.state != State.CLOSED,
            max_keys=max_keys,
            idle_s=idle_s,
            clock=kwargs.get("clock", time.monotonic),
            what="circuit breakers",
            last_used=lambda breaker: breaker.used_at,
        )
        self._lock = threading.Lock()

    def _new(self, key: Key) -> CircuitBreaker:
        breaker = CircuitBreaker.from_config(self.config, str(key), **self._kwargs)
        if self.shared is not None:
            self.shared.attach(breaker, key)
        for listener in self.listeners:
            breaker.add_listener(listener)
        return breaker

    def get(self, key: KeyLike) -> CircuitBreaker:
        with self._lock:
            return self._breakers.obtain(Key.of(key))

    def __iter__(self) -> Iterator[CircuitBreaker]:
        with self._lock:
            return self._breakers.values()
