"""One fake clock for every test of a rate, a wait or a timeout: it moves only when told."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

__all__ = ["FakeClock", "settle"]


class _Handle:
    def __init__(self, flag: list[bool]) -> None:
        self._flag = flag

    def cancel(self) -> None:
        self._flag[0] = True


class FakeClock:
    """``clock()`` is the time; ``call_later`` queues timers that ``advance`` fires in order.

    Pass the instance as a ``clock=`` and its ``call_later`` as a ``call_later=``; set ``now``
    directly when no timers are involved."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, Callable[[], None], list[bool]]] = []
        self._ids = itertools.count()

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Handle:
        cancelled = [False]
        heapq.heappush(self._timers, (self.now + delay, next(self._ids), callback, cancelled))
        return _Handle(cancelled)

    @property
    def pending(self) -> int:
        """Timers armed and not cancelled."""
        return sum(1 for *_, c in self._timers if not c[0])

    async def advance(self, seconds: float) -> None:
        """Move time on, firing due timers in order and letting woken tasks run."""
        target = self.now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, callback, cancelled = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not cancelled[0]:
                callback()
            await settle()
        self.now = target
        await settle()


async def settle() -> None:
    """Let every ready task run (a few loop turns), without sleeping."""
    for _ in range(5):
        await asyncio.sleep(0)
