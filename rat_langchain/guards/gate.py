"""The learned concurrency gate: attempts of one key in flight, admitted first in, first out
under the limit ``guards.learn.Concurrency`` learns where a silent server answers 429.

Why not an ``asyncio.Semaphore``: its size moves (AIMD) while callers wait, one limiter serves
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
    """``async with gate``: one attempt of the key in flight."""

    __slots__ = ("_lock", "_state")

    def __init__(self, lock: threading.Lock, state: KeyState) -> None:
        self._lock = lock
        self._state = state

    async def __aenter__(self) -> None:
        state = self._state
        assert state.concurrency is not None
        with self._lock:
            if not state.gate_waiters and state.concurrency.admits(state.in_flight):
                state.in_flight += 1
                return
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            state.gate_waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            with self._lock:
                if waiter.done() and not waiter.cancelled():  # admitted, then cancelled
                    state.in_flight -= 1
                    self._admit()
                elif waiter in state.gate_waiters:
                    state.gate_waiters.remove(waiter)
            raise

    async def __aexit__(self, *_exc: object) -> None:
        state = self._state
        assert state.concurrency is not None
        with self._lock:
            state.concurrency.completed(state.in_flight)
            state.in_flight -= 1
            self._admit()

    def _admit(self) -> None:
        """Let queued attempts in while the concurrency limit allows. Lock held."""
        state = self._state
        assert state.concurrency is not None
        while state.gate_waiters and state.concurrency.admits(state.in_flight):
            waiter = state.gate_waiters.popleft()
            if waiter.done():
                continue
            state.in_flight += 1
            self._resolve(waiter)

    def _resolve(self, waiter: asyncio.Future[None]) -> None:
        """Wake ``waiter`` on its own loop (a limiter serves every loop of the process)."""
        loop = waiter.get_loop()
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here:
            waiter.set_result(None)
            return

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)
                return
            with self._lock:  # cancelled on the way: its slot goes to the next
                self._state.in_flight -= 1
                self._admit()

        if not loop.is_closed():
            loop.call_soon_threadsafe(wake)
