"""Sync entry points run the async path on one long-lived background event loop.

Why one loop and not ``asyncio.run`` per call: the pooled HTTP client is per event loop, so a new
loop per sync call would open new connections every time. Why not the caller's loop: a sync call
made from inside a running loop (Jupyter, an async framework calling old sync code) cannot block
that loop on itself. The portal thread only runs the event loop; the I/O is still async.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_DONE = object()


def _portal_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="rat-langchain-portal", daemon=True
            )
            thread.start()
            _loop, _thread = loop, thread
        return _loop


@atexit.register
def _shutdown() -> None:
    """Close what lives on the portal loop (pooled HTTP clients close with the loop's
    ``shutdown_asyncgens``), then stop it, so nothing is left unclosed at exit."""
    loop, thread = _loop, _thread
    if loop is None or thread is None or not loop.is_running():
        return
    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(timeout=5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    if not loop.is_running():
        loop.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the portal loop and wait for its result from this (sync) thread."""
    loop = _portal_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("a sync rat_langchain call was made from its own portal loop; await it")
    # in the caller's context: context variables set around a sync call (a prefill of
    # embeddings, a tracing span) reach the coroutine as they would an async call
    future = asyncio.run_coroutine_threadsafe(_in_context(coro, contextvars.copy_context()), loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


async def _in_context(coro: Coroutine[Any, Any, T], context: contextvars.Context) -> T:
    return await asyncio.get_running_loop().create_task(coro, context=context)


def iterate(agen: AsyncIterator[T]) -> Iterator[T]:
    """Drive an async iterator on the portal loop, yielding its items to this sync thread."""
    loop = _portal_loop()
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()  # a chat stream is small: no bound

    async def pump() -> None:
        try:
            async for item in agen:
                items.put(item)
        except BaseException as exc:  # handed to the consumer, re-raised there
            items.put(exc)
            return
        items.put(_DONE)

    future = asyncio.run_coroutine_threadsafe(pump(), loop)
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        future.cancel()
