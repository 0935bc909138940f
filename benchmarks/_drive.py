"""Issue ``n`` calls with at most ``concurrency`` in flight; count the ones that succeeded.

Shared by the benchmarks that compare clients on the same load (a failure is counted, not
raised: how many calls fail is what they measure)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["drive"]


async def drive(
    n: int,
    concurrency: int,
    call: Callable[[int], Awaitable[Any]],
    *,
    finished: list[float] | None = None,
) -> tuple[int, float]:
    """``(succeeded, wall seconds)`` of ``call(0) .. call(n - 1)``. ``finished``: where given,
    each success's seconds from the start are appended to it, in the order they came."""
    gate = asyncio.Semaphore(concurrency)
    ok = 0

    async def one(i: int) -> None:
        nonlocal ok
        async with gate:
            try:
                await call(i)
                ok += 1
                if finished is not None:
                    finished.append(time.perf_counter() - start)
            except Exception:
                pass

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for i in range(n):
            tg.create_task(one(i))
    return ok, time.perf_counter() - start
