"""LLMBatcher: many prompts (or inputs to any Runnable) at once, in order, none lost.

LangChain's ``abatch`` is close, but it starts one task per input up front, has no progress
bar, and either fails the whole batch or needs ``return_exceptions`` threaded through every
caller. Here a fixed number of workers pull inputs, every call goes through the resilient
policy (limiter, breaker, retries, deadline: the runnable is wrapped unless it already is), and
each failed item gets its error in its own slot while the others go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

from langchain_core.runnables import Runnable, RunnableConfig

from rat_langchain._progress import progress
from rat_langchain.config import RatConfig
from rat_langchain.guards import Guards, build_guards
from rat_langchain.pool.chat import ResilientChatOpenAI
from rat_langchain.pool.runnables import ResilientRunnable, resilient

__all__ = ["LLMBatcher"]

Input = TypeVar("Input")
Output = TypeVar("Output")


class LLMBatcher(Generic[Input, Output]):
    """Run a Runnable over many inputs concurrently; results come back in input order.

    Example::

        batcher = LLMBatcher(prompt | pool.chat_model() | StrOutputParser(), max_concurrency=32)
        answers = await batcher.abatch([{"q": q} for q in questions])   # value or exception each
        failed = [a for a in answers if isinstance(a, Exception)]

    ``return_exceptions=False`` makes the first failure cancel the rest and raise instead.
    ``wrap``: wrap the runnable with :func:`resilient` (default: only when it has no pool
    model or resilient wrapper inside already, so nothing is limited or retried twice); its
    guards come from ``guards`` (e.g. ``pool.guards``) or are built from ``config``.
    ``progress=True`` shows a tqdm bar (by default only for more than 100 inputs).
    """

    def __init__(
        self,
        runnable: Runnable[Input, Output],
        *,
        max_concurrency: int | None = None,
        return_exceptions: bool = True,
        progress: bool | None = None,
        config: RatConfig | None = None,
        wrap: bool | None = None,
        guards: Guards | None = None,
    ) -> None:
        if guards is not None:
            config = guards.config
        config = config or RatConfig.load()
        if max_concurrency is None:
            max_concurrency = config.performance.parallel_execution.max_parallel_llm_calls
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if wrap is None:  # auto: wrap unless a guarded model or wrapper is already inside
            wrap = not _has_guard(runnable)
        self.runnable: Runnable[Input, Output] = (
            resilient(runnable, guards=guards or build_guards(config)) if wrap else runnable
        )
        self.max_concurrency = max_concurrency
        self.return_exceptions = return_exceptions
        self.progress = progress

    def __repr__(self) -> str:
        return (
            f"LLMBatcher({self.runnable.get_name()}, max_concurrency={self.max_concurrency}, "
            f"return_exceptions={self.return_exceptions})"
        )

    async def abatch(
        self, inputs: Iterable[Input], config: RunnableConfig | None = None
    ) -> list[Output | Exception]:
        items: Sequence[Input] = inputs if isinstance(inputs, Sequence) else list(inputs)
        results: list[Any] = [_MISSING] * len(items)
        queue = iter(enumerate(items))
        bar = self._bar(len(items))

        async def worker() -> None:
            for index, item in queue:  # one shared iterator: each input is taken once
                try:
                    results[index] = await self.runnable.ainvoke(item, config)
                except Exception as exc:
                    if not self.return_exceptions:
                        raise
                    results[index] = exc
                if bar is not None:
                    bar.update(1)

        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(self.max_concurrency, len(items))):
                    tg.create_task(worker())
        except ExceptionGroup as group:
            raise group.exceptions[0] from None
        finally:
            if bar is not None:
                bar.close()
        assert all(r is not _MISSING for r in results), "an input was not processed"
        return results

    def batch(
        self, inputs: Iterable[Input], config: RunnableConfig | None = None
    ) -> list[Output | Exception]:
        """Sync wrapper for old callers (works inside a running loop too)."""
        from rat_langchain import _portal

        return _portal.run(self.abatch(inputs, config))

    def _bar(self, total: int) -> Any:
        show = self.progress if self.progress is not None else total > 100
        if not show:
            return None
        return progress("LLM calls", "call", total)


_MISSING: Any = object()


def _has_guard(runnable: Any, depth: int = 0) -> bool:
    """Whether a pool model or a resilient wrapper is in ``runnable`` (sequences, bindings)."""
    if isinstance(runnable, ResilientRunnable | ResilientChatOpenAI):
        return True
    if depth > 20:
        return False
    inner = [getattr(runnable, name, None) for name in ("bound", "first", "last")]
    inner += list(getattr(runnable, "middle", None) or [])
    inner += list(getattr(runnable, "steps__", {}).values()) if hasattr(runnable, "steps__") else []
    return any(_has_guard(r, depth + 1) for r in inner if isinstance(r, Runnable))
