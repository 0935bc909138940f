"""The learned concurrency gate: attempts of one key in flight, admitted first in, first out
under the limit ``guards.learn.Concurrency`` learns where a silent server answers 429.

Why not an ``asyncio.Semaphore``: its size moves (slow start, AIMD) while callers wait, and
not only when an attempt completes (the slow start's pace wakes it on a timer); one limiter serves
every event loop of the process (the sync entry points' loop among them), and a completion
feeds the learner. So the waiters are futures woken on their own loop, under the feedback
policy's lock (guards.feedback), which also guards the count in flight.
"""

from __future__ import annotations

import asyncio
import threading

from rat_langchain.guards.feedback import Feedback
from rat_langchain.guards.key import Key, KeyLike
from rat_langchain.guards.state import KeyState

__all__ = ["Gate", "gate_for"]


def gate_for(feedback: Feedback, key: KeyLike) -> Gate | None:
    """The gate of ``key``; None for a key that never learns a concurrency limit (its
    requests are not on ``auto``)."""
    key = Key.of(key)
    with feedback.lock:
        state = feedback.state(key)
    return None if state.concurrency is None else Gate(feedback.lock, state)


class Gate:
    """``async with gate as number``: one attempt of the key in flight, and its admission
    number (see ``KeyState.admit``), which its 429 reports (``observe_429(..., admitted=
    number)``): whether it went before or after a refusal tells a window's overshoot from a
    spent rate."""

    __slots__ = ("_lock", "_number", "_state")

    def __init__(self, lock: threading.Lock, state: KeyState) -> None:
        self._lock = lock
        self._state = state
        self._number = 0

    async def __aenter__(self) -> int:
        state = self._state
        assert state.concurrency is not None
        concurrency = state.concurrency
        with self._lock:
            if not state.gate_waiters and concurrency.admits(state.in_flight):
                concurrency.admitted()
                self._number = state.admit()
                return self._number
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[int] = loop.create_future()
            state.gate_waiters.append(waiter)
            self._arm(loop)
        try:
            self._number = await waiter
            return self._number
        except asyncio.CancelledError:
            with self._lock:
                if waiter.done() and not waiter.cancelled():  # admitted, then cancelled
                    state.in_flight -= 1
                    self._admit()
                elif waiter in state.gate_waiters:
                    state.gate_waiters.remove(waiter)
                    if not state.gate_waiters:
                        self._disarm()
            raise

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        state = self._state
        assert state.concurrency is not None
        with self._lock:
            if exc is None:
                state.concurrency.answered(self._number, state.in_flight)
                state.concurrency.outcome(state.clock(), refused=False)
            state.concurrency.completed(state.in_flight)
            state.in_flight -= 1
            self._admit()

    def _admit(self) -> None:
        """Let queued attempts in while the concurrency limit allows. Lock held."""
        state = self._state
        concurrency = state.concurrency
        assert concurrency is not None
        concurrency.pace()
        while state.gate_waiters and concurrency.admits(state.in_flight):
            waiter = state.gate_waiters.popleft()
            if waiter.done():
                continue
            concurrency.admitted()
            self._resolve(waiter, state.admit())
        if not state.gate_waiters:
            concurrency.unblocked()
            self._disarm()
        else:  # an answer may have started the pace (none before the first)
            self._arm(asyncio.get_running_loop())

    def _disarm(self) -> None:
        """Nobody waits: no pace timer (it would fire for nobody, maybe on a closed loop)."""
        state = self._state
        if state.gate_timer is not None:
            state.gate_timer.cancel()
            state.gate_timer = None

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """While slow-starting with callers waiting: a timer on ``loop`` for when the pace
        lets the next one in (one per key; answers admit them too). Lock held."""
        state = self._state
        assert state.concurrency is not None
        timer = state.gate_timer
        if timer is not None and not timer.cancelled():
            return
        delay = state.concurrency.blocked()
        if delay is not None:
            state.gate_timer = loop.call_later(delay, self._paced)

    def _paced(self) -> None:
        """The pace's timer: admit whom the grown window lets in, and arm for the next."""
        state = self._state
        with self._lock:
            state.gate_timer = None
            self._admit()

    def _resolve(self, waiter: asyncio.Future[int], number: int) -> None:
        """Wake ``waiter`` on its own loop (a limiter serves every loop of the process)."""
        loop = waiter.get_loop()
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here:
            waiter.set_result(number)
            return

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(number)
                return
            with self._lock:  # cancelled on the way: its slot goes to the next
                self._state.in_flight -= 1
                self._admit()

        if not loop.is_closed():
            loop.call_soon_threadsafe(wake)
