"""``resilient(runnable)``: deadline, circuit breaker, rate limiter and retries around any Runnable.

Why every entry point is overridden: a wrapper that overrides only ``ainvoke``/``astream`` is
bypassed inside a ``RunnableSequence``, which calls each step's ``abatch`` and ``atransform``.
Here invoke, batch, stream and transform (sync and async) all go through the same guard, and the
wrapped Runnable runs as a child run, so callbacks and tracing see its own events.

Streams are retried only until their first chunk: after that the caller has seen output, and a
retry would duplicate it, so the error surfaces.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from pydantic import ConfigDict

from rat_langchain.config import RatConfig
from rat_langchain.guards import Guard, Guards, build_guards
from rat_langchain.guards.breaker import CircuitBreaker
from rat_langchain.guards.key import Key, KeyLike, tenant_of
from rat_langchain.guards.limiter import Limiter
from rat_langchain.guards.retry import RetryPolicy

__all__ = ["ResilientRunnable", "resilient"]

_UNSET: Any = object()


class ResilientRunnable(RunnableSerializable[Any, Any]):
    """A Runnable that runs ``bound`` under a :class:`~rat_langchain.guards.engine.Guard`.

    Made by :func:`resilient`; every invoke/batch/stream/transform entry point is guarded.
    """

    bound: Runnable[Any, Any]
    guard: Guard
    cost: Callable[[Any], int] | None = None

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def InputType(self) -> Any:
        return self.bound.InputType

    @property
    def OutputType(self) -> Any:
        return self.bound.OutputType

    def get_input_schema(self, config: RunnableConfig | None = None) -> Any:
        return self.bound.get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> Any:
        return self.bound.get_output_schema(config)

    def _tokens(self, input: Any) -> int:
        return self.cost(input) if self.cost is not None else 0

    # -- invoke / batch --------------------------------------------------------------------------

    async def _ainvoke(
        self,
        input: Any,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Any:
        child = patch_config(config, callbacks=run_manager.get_child())
        return await self.guard.run(
            lambda: self.bound.ainvoke(input, child, **kwargs), tokens=self._tokens(input)
        )

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    # Sync entry points call the wrapped runnable's own sync path under the same policy. Running
    # its async path on another loop could break it: LangChain's default OpenAI client is bound
    # to the first loop that used it (langchain#35783).

    def _invoke(
        self,
        input: Any,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Any:
        child = patch_config(config, callbacks=run_manager.get_child())
        return self.guard.run_sync(
            lambda: self.bound.invoke(input, child, **kwargs), tokens=self._tokens(input)
        )

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._invoke, input, config, **kwargs)

    # batch/abatch and the *_as_completed variants: Runnable's defaults call self.invoke /
    # self.ainvoke per input (under max_concurrency), which are guarded.

    # -- stream / transform --------------------------------------------------------------------

    async def _atransform(
        self,
        inputs: AsyncIterator[Any],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        input = await _collect(inputs)  # a retry needs the whole input again
        child = patch_config(config, callbacks=run_manager.get_child())

        async def open_stream() -> tuple[AsyncIterator[Any], Any]:
            stream = self.bound.astream(input, child, **kwargs).__aiter__()
            try:
                return stream, await anext(stream, _UNSET)
            except BaseException:
                await _aclose(stream)
                raise

        stream, first = await self.guard.run(open_stream, tokens=self._tokens(input))
        try:
            if first is _UNSET:
                return
            yield first
            async for chunk in stream:
                yield chunk
        finally:
            await _aclose(stream)

    async def atransform(
        self,
        input: AsyncIterator[Any],
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        async for chunk in self._atransform_stream_with_config(
            input, self._atransform, config, **kwargs
        ):
            yield chunk

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        async for chunk in self.atransform(_once(input), config, **kwargs):
            yield chunk

    def _transform(
        self,
        inputs: Iterator[Any],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Iterator[Any]:
        input = _collect_sync(inputs)
        child = patch_config(config, callbacks=run_manager.get_child())

        def open_stream() -> tuple[Iterator[Any], Any]:
            stream = iter(self.bound.stream(input, child, **kwargs))
            try:
                return stream, next(stream, _UNSET)
            except BaseException:
                _close(stream)
                raise

        stream, first = self.guard.run_sync(open_stream, tokens=self._tokens(input))
        try:
            if first is _UNSET:
                return
            yield first
            yield from stream
        finally:
            _close(stream)

    def transform(
        self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        yield from self._transform_stream_with_config(input, self._transform, config, **kwargs)

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        yield from self.transform(iter([input]), config, **kwargs)


def _collect_sync(inputs: Iterator[Any]) -> Any:
    final: Any = _UNSET
    for item in inputs:
        final = item if final is _UNSET else _add(final, item)
    return None if final is _UNSET else final


def _close(stream: Iterator[Any]) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


async def _once(item: Any) -> AsyncIterator[Any]:
    yield item


async def _collect(inputs: AsyncIterator[Any]) -> Any:
    """Fold a streamed input into one value the way LangChain does (``+`` on chunks)."""
    final: Any = _UNSET
    async for item in inputs:
        final = item if final is _UNSET else _add(final, item)
    return None if final is _UNSET else final


def _add(left: Any, right: Any) -> Any:
    try:
        return left + right
    except TypeError:  # not addable chunks: the last one wins, as in LangChain
        return right


async def _aclose(stream: AsyncIterator[Any]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


def resilient(
    runnable: Runnable[Any, Any],
    *,
    key: KeyLike | None = None,
    limiter: Limiter | None = _UNSET,
    breaker: CircuitBreaker | None = _UNSET,
    retry: RetryPolicy | None = _UNSET,
    timeout: float | None = _UNSET,
    cost: Callable[[Any], int] | None = None,
    config: RatConfig | None = None,
    guards: Guards | None = None,
) -> ResilientRunnable:
    """Wrap any Runnable (a chain, a tool, a model) with deadline → breaker → limiter → retries.

    The parts come from ``guards`` (e.g. ``pool.guards``, to share a pool's quota, breakers and
    metrics), else are built from ``config`` (``RatConfig.load()`` by default) by
    :func:`~rat_langchain.guards.build_guards`, each only if its ``enabled`` flag is on: the
    Redis limiter with ``backend: redis``, shared breaker state with ``share_open_state``, and a
    metrics table (``wrapped.guard.metrics``). A part passed here replaces that one; ``None``
    switches it off. ``key`` names the quota and the breaker. By default it is the OpenAI model
    the runnable calls, when there is exactly one (a chat model, alone, bound or in a
    chain): its endpoint, model and API-key fingerprint, the key ``pool.chat_model()`` uses, so
    two API keys are two quotas and two breakers; else the runnable's name.
    ``cost(input)`` estimates tokens for the TPM bucket.

    Example::

        guarded = resilient(prompt | llm | parser, timeout=30)
        await guarded.ainvoke({"question": "..."})
    """
    if guards is None:
        guards = build_guards(config)
    guard = guards.guard(key if key is not None else _key_of(runnable))
    overrides: dict[str, Any] = {
        name: value
        for name, value in (
            ("limiter", limiter),
            ("breaker", breaker),
            ("retry", retry),
            ("timeout", timeout),
        )
        if value is not _UNSET
    }
    if overrides:
        guard = replace(guard, **overrides)
    return ResilientRunnable(bound=runnable, guard=guard, cost=cost)


def _key_of(runnable: Runnable[Any, Any]) -> KeyLike:
    """The quota a wrapped runnable spends: the one OpenAI model it calls, else its name.

    Why not always the name: ``resilient(ChatOpenAI(api_key=a))`` and the same with key ``b`` are
    both named ``ChatOpenAI``, so they shared one limiter and one breaker, and one tenant's
    ``insufficient_quota`` opened the other's circuit. A chain calling several models (or none
    found) keeps its name: no one model's quota is the chain's."""
    found = set(_model_keys(runnable, depth=0))
    return found.pop() if len(found) == 1 else runnable.get_name()


_MAX_DEPTH = 8  # a chain nests bindings in sequences; deeper than this is not worth a walk


def _model_keys(runnable: Any, depth: int) -> Iterator[Key]:
    """The keys of the OpenAI models in ``runnable``: itself, a binding's ``bound``
    (``bind_tools``, ``with_config``) and a sequence's steps. Read by attribute, not by type,
    so ``langchain_openai`` is not imported here and any model shaped like it counts."""
    if depth > _MAX_DEPTH:
        return
    model = getattr(runnable, "model_name", None) or getattr(runnable, "model", None)
    if isinstance(model, str) and hasattr(runnable, "openai_api_key"):
        base = getattr(runnable, "openai_api_base", None) or getattr(
            runnable, "azure_endpoint", None
        )
        yield Key(str(base or "").rstrip("/"), model, tenant_of(runnable.openai_api_key))
        return
    bound = getattr(runnable, "bound", None)
    if isinstance(bound, Runnable):
        yield from _model_keys(bound, depth + 1)
    for step in getattr(runnable, "steps", None) or ():
        yield from _model_keys(step, depth + 1)
