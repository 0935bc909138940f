"""ResilientChatOpenAI: a real ``ChatOpenAI`` whose every request goes through the guard.

Why a subclass and not only a wrapper: it stays a ``ChatOpenAI``, so ``bind_tools``,
``with_structured_output``, ``isinstance`` checks, callbacks and tracing keep working unchanged,
and one LLM run in a trace covers its retries. The guard applies per HTTP request: deadline,
circuit breaker, RPM+TPM limiter (tokens counted offline, reconciled with ``usage``, tightened by
``x-ratelimit-*`` headers) and tenacity retries. Streams are retried only until the first chunk
arrives; after that an error surfaces, since the caller has already seen output.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from pydantic import Field, PrivateAttr

from rat_langchain import _portal
from rat_langchain._tokens import count_request_tokens, encode
from rat_langchain.guards import Guard, Guards, Key
from rat_langchain.guards.key import tenant_of
from rat_langchain.guards.limiter import Reservation

__all__ = ["ResilientChatOpenAI"]

_MAX_CACHED_GUARDS = 64  # a guard is cheap to make again; the registries keep the state

# Reserved for the answer when the request sets no max_tokens; reconciled with usage afterwards.
DEFAULT_COMPLETION_ESTIMATE = 256


def _as_dicts(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"content": message.content}
        if isinstance(message, AIMessage) and message.tool_calls:
            item["tool_calls"] = [
                {"function": {"name": c["name"], "arguments": json.dumps(c["args"])}}
                for c in message.tool_calls
            ]
        out.append(item)
    return out


async def _next(stream: AsyncIterator[ChatGenerationChunk]) -> ChatGenerationChunk | None:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


class ResilientChatOpenAI(ChatOpenAI):
    """``ChatOpenAI`` with deadline, breaker, limiter and retries around every request.

    Made by ``ClientPool.chat_model()``; without a guard it behaves exactly like ``ChatOpenAI``.
    """

    rat_guards: Guards | None = Field(default=None, exclude=True, repr=False)
    """The guards of the pool that made this model (``pool.guards``). A field, not private
    state, so that every copy LangChain makes keeps it: ``configurable_fields`` and
    ``configurable_alternatives`` build a new model from the fields, ``bind_tools`` and
    ``with_structured_output`` wrap this one, ``model_copy`` copies it."""
    rat_max_attempts: int | None = Field(default=None, exclude=True, repr=False)
    """Attempts per call when the model was made with ``max_retries=N`` (N+1); else the
    config's ``retries.max_attempts``."""

    # Guards made so far, by (guards object, attempts, model): a copy with other guards or
    # other attempts (model_copy shares this dict) never gets a guard made for the original.
    _guards_by_model: dict[tuple[int, int | None, str], Guard] = PrivateAttr(default_factory=dict)

    @classmethod
    def lc_id(cls) -> list[str]:
        """Serialised as the ``ChatOpenAI`` it is: ``loads(dumps(llm))`` gives a ``ChatOpenAI``
        with the same settings (the pool and its guards are this process's state, not
        settings; ``pool.chat_model(**settings)`` puts a loaded model back on a pool)."""
        return [*ChatOpenAI.get_lc_namespace(), "ChatOpenAI"]

    def with_guards(self, guards: Guards | None) -> ResilientChatOpenAI:
        """A copy of this model whose requests go through ``guards`` (LangChain's ``with_*``
        convention: this object is unchanged); ``None`` makes it a plain ``ChatOpenAI``."""
        return self.model_copy(update={"rat_guards": guards})

    def guard_for(self, model: str | None = None) -> Guard | None:
        """The guard of a call to ``model`` (default: this model's): a per-call
        ``model="..."`` override is charged to the limiter and breaker of the model called."""
        if self.rat_guards is None:
            return None
        name = model or self.model_name
        cache_key = (id(self.rat_guards), self.rat_max_attempts, name)
        guard = self._guards_by_model.get(cache_key)
        if guard is None:
            guard = self.rat_guards.guard(
                Key(self.openai_api_base or "", name, tenant_of(self.openai_api_key))
            )
            if self.rat_max_attempts is not None and guard.retry is not None:
                guard = replace(
                    guard, retry=replace(guard.retry, max_attempts=self.rat_max_attempts)
                )
            if len(self._guards_by_model) >= _MAX_CACHED_GUARDS:
                self._guards_by_model.clear()  # per-call model names can be user input
            self._guards_by_model[cache_key] = guard
        return guard

    @property
    def guard(self) -> Guard | None:
        """The guard of this model's own calls."""
        return self.guard_for()

    # -- token counts offline (langchain-openai's download tiktoken's tables) -------------------

    def get_token_ids(self, text: str) -> list[int]:
        if self.custom_get_token_ids is not None:
            return self.custom_get_token_ids(text)
        return encode(text, self.tiktoken_model_name or self.model_name)

    def get_num_tokens_from_messages(
        self,
        messages: Sequence[BaseMessage],
        tools: Sequence[Any] | None = None,
        *,
        allow_fetching_images: bool = False,
    ) -> int:
        """Prompt tokens of ``messages`` (and ``tools``), counted offline as the limiter
        counts them."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        return count_request_tokens(
            _as_dicts(list(messages)),
            self.tiktoken_model_name or self.model_name,
            tools=[convert_to_openai_tool(tool) for tool in tools or ()],
        )

    def _estimate(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> int:
        completion = (
            kwargs.get("max_completion_tokens")
            or kwargs.get("max_tokens")
            or self.max_tokens
            or DEFAULT_COMPLETION_ESTIMATE
        )
        prompt = count_request_tokens(
            _as_dicts(messages),
            self.model_name,
            tools=kwargs.get("tools"),
            response_format=kwargs.get("response_format"),
        )
        return prompt + int(completion)

    @staticmethod
    def _settle(guard: Guard, result: ChatResult, reservation: Reservation | None) -> None:
        usage = (result.llm_output or {}).get("token_usage") or {}
        total = usage.get("total_tokens")
        if total is None and result.generations:
            message = result.generations[0].message
            meta = getattr(message, "usage_metadata", None)
            total = meta.get("total_tokens") if meta else None
        if reservation is not None and total is not None:
            reservation.reconcile(int(total))
        headers = (
            (result.generations[0].generation_info or {}).get("headers")
            if result.generations
            else None
        )
        if headers and guard.limiter is not None:
            guard.limiter.observe(guard.key, headers)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        parent = super()._agenerate
        guard = self.guard_for(kwargs.get("model"))
        if guard is None or self.streaming:  # streaming=True goes through our _astream
            return await parent(messages, stop=stop, run_manager=run_manager, **kwargs)
        return await guard.run(
            lambda: parent(messages, stop=stop, run_manager=run_manager, **kwargs),
            tokens=self._estimate(messages, kwargs),
            on_result=partial(self._settle, guard),
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        source: ResilientChatOpenAI = self
        if "response_format" in kwargs and self.include_response_headers:
            # the SDK's streaming parse returns no headers, and langchain-openai would warn on
            # every call; the limiter learns from the next plain answer instead
            source = self.model_copy(update={"include_response_headers": False})
        parent = super(ResilientChatOpenAI, source)._astream
        guard = self.guard_for(kwargs.get("model"))
        if guard is None:
            async for plain in parent(messages, stop=stop, run_manager=run_manager, **kwargs):
                yield plain
            return
        reservations: list[Reservation | None] = []

        async def open_stream() -> tuple[AsyncIterator[ChatGenerationChunk], Any]:
            stream = parent(messages, stop=stop, run_manager=run_manager, **kwargs).__aiter__()
            try:
                return stream, await _next(stream)
            except BaseException:
                await stream.aclose()  # type: ignore[attr-defined]
                raise

        stream, first = await guard.run(
            open_stream,
            tokens=self._estimate(messages, kwargs),
            on_result=lambda _result, reservation: reservations.append(reservation),
        )
        used: int | None = None
        chunk: ChatGenerationChunk | None = first
        while chunk is not None:
            meta = getattr(chunk.message, "usage_metadata", None)
            if meta:
                used = (used or 0) + int(meta.get("total_tokens", 0))
            yield chunk
            chunk = await _next(stream)
        reservation = reservations[0] if reservations else None
        if reservation is not None and used is not None:
            reservation.reconcile(used)

    # Sync callers run the same async path on the portal loop (see _portal): one pooled client,
    # one policy, and it works even when called from inside a running event loop.

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.rat_guards is None:
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        return _portal.run(self._agenerate(messages, stop=stop, run_manager=None, **kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if self.rat_guards is None:
            yield from super()._stream(messages, stop=stop, run_manager=run_manager, **kwargs)
            return
        for chunk in _portal.iterate(self._astream(messages, stop=stop, **kwargs)):
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
