"""PooledOpenAIEmbeddings: batched, concurrent, validated embeddings on the pooled client.

Why not ``OpenAIEmbeddings``: its ``aembed_documents`` sends chunks one after another and trusts
whatever comes back. Here texts are deduplicated, split into batches that respect the API's limits
(inputs and tokens per request), sent concurrently through the rate limiter, breaker and retries,
decoded from base64 straight into float32, checked (one finite vector of the right dimension per
input) and returned in input order. A batch the server rejects as a whole (400) is split in halves
until the bad input is found; the others are still embedded, and the error names its index.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import math
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import httpx2
import numpy as np
import openai
from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from rat_langchain import _portal
from rat_langchain._tokens import encode, encoding_for, lone_surrogate
from rat_langchain._vectors import NATIVE_DIMENSIONS, decode_vectors
from rat_langchain.config import RatConfig
from rat_langchain.errors import (
    EmbeddingInputError,
    EmbeddingResponseError,
    MalformedResponseError,
    a_kind,
)
from rat_langchain.guards.engine import Guard
from rat_langchain.guards.key import Key, tenant_of
from rat_langchain.index.embedding_cache import EmbeddingCache
from rat_langchain.pool._clients import Clients, recent
from rat_langchain.pool._coalesce import Coalescer, SendRows

__all__ = ["EmbeddingInputError", "EmbeddingResponseError", "PooledOpenAIEmbeddings"]

MAX_INPUTS_PER_REQUEST = 2048
_MIN_PER_REQUEST = 100  # below this, per-request overhead outweighs spreading a call wider
_UNKNOWN_MAX_PER_REQUEST = 1000  # with no limits known: what OpenAIEmbeddings sends (chunk_size)

# vectors already made (by the Batch API), for one embeddings object: see ``prefilled``
_PREFILLED: contextvars.ContextVar[
    tuple[PooledOpenAIEmbeddings, Mapping[str, np.ndarray]] | None
] = contextvars.ContextVar("rat_langchain_prefilled", default=None)
MAX_TOKENS_PER_REQUEST = 300_000


@dataclass
class _Split:
    """What is sent: ``pieces`` (texts or chunks of long texts), their token counts, and for each
    unique text the indices of its pieces."""

    pieces: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)


_DEFAULT_POOLS: dict[str, Clients] = {}


def _default_pool(config: RatConfig) -> Clients:
    """Embeddings made without a pool share one per configuration. Keyed by the settings and
    a one-way fingerprint of the key: a JSON dump alone masks the key as ``**********``, so two
    configs that differ only in their key would share a pool (and the rebuilt config would
    lose its key)."""
    key = tenant_of(config.endpoint.api_key)
    name = f"{config.model_dump_json()}|{key}"
    pool = _DEFAULT_POOLS.get(name)
    if pool is None:
        pool = _DEFAULT_POOLS[name] = Clients(config)
    return pool


class PooledOpenAIEmbeddings(BaseModel, Embeddings):
    """OpenAI embeddings, batched and concurrent, on a shared pooled client.

    Example::

        emb = PooledOpenAIEmbeddings(model="text-embedding-3-small")   # OPENAI_API_KEY from env
        vectors = await emb.aembed_documents(texts)                     # in input order
        emb = pool.embeddings()                                         # the same, on your pool
    """

    model: str = "text-embedding-3-small"
    """Embedding model name."""
    base_url: str | None = None
    """OpenAI-compatible base URL; default: the config's endpoint, then OPENAI_BASE_URL."""
    api_key: SecretStr | None = None
    """API key; default: the config's endpoint, then OPENAI_API_KEY. Never shown."""
    dimensions: int | None = Field(default=None, gt=0)
    """Vector size to ask for (text-embedding-3 models only)."""
    batch_size: int | None = Field(default=None, gt=0, le=MAX_INPUTS_PER_REQUEST)
    """Texts per request; default ``performance.batch_embeddings.batch_size`` (None: sized from
    the endpoint's learned limits, 100 to 2048)."""
    max_concurrent_batches: int | None = Field(default=None, gt=0)
    """Requests in flight; default ``performance.batch_embeddings.max_concurrent_batches``."""
    max_tokens_per_request: int = Field(default=MAX_TOKENS_PER_REQUEST, gt=0)
    """Token cap of one request (the API's is 300k)."""
    context_length: int = Field(default=8191, gt=0)
    """Tokens one input may have; longer texts are split (``long_text="average"``) or rejected."""
    long_text: Literal["average", "reject"] = "average"
    """Over-long text: embed its chunks and average them weighted by length, or raise."""
    config: RatConfig | None = Field(default=None, exclude=True, repr=False)
    """Settings; default ``RatConfig.load()``."""
    cache: EmbeddingCache | None = Field(default=None, exclude=True, repr=False)
    """Vectors already embedded, on disk: they are not requested again."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    _pool: Clients | None = PrivateAttr(default=None)

    def with_pool(self, pool: Clients) -> PooledOpenAIEmbeddings:
        """A copy of these embeddings that sends through ``pool`` (LangChain's ``with_*``
        convention: this object is unchanged)."""
        copy = self.model_copy()
        copy._pool = pool
        return copy

    @property
    def pool(self) -> Clients:
        if self._pool is None:
            config = self.config or RatConfig.load()
            self._pool = _default_pool(config)
        return self._pool

    # -- the async path ------------------------------------------------------------------------

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        # row by row: one ``tolist`` of the whole matrix built its 30 million floats 1.5-3.5x
        # slower than a row at a time (20,000 x 1536: 1.3-2.8 s against 0.86 s, a `/tmp`
        # probe), and made bulk ``aembed_documents`` slower than OpenAIEmbeddings'
        return [row.tolist() for row in await self.aembed_array(texts)]

    async def aembed_query(self, text: str) -> list[float]:
        _check_input(text, "the query")  # not "text 0": the caller passed no list
        return (await self._embed_checked([text]))[0].tolist()

    @contextlib.contextmanager
    def prefilled(self, vectors: Mapping[str, np.ndarray]) -> Iterator[None]:
        """Within this block (this task, the tasks it starts and sync calls it makes), texts in
        ``vectors`` are answered from it instead of the API. Why: vectors the Batch API made go
        into *any* LangChain vector store through the store's own add path, which calls this
        object; no store needs an "add with vectors" method."""
        token = _PREFILLED.set((self, vectors))
        try:
            yield
        finally:
            _PREFILLED.reset(token)

    async def aembed_array(self, texts: Sequence[str]) -> np.ndarray:
        """The vectors as one float32 array, row i for ``texts[i]`` (no Python float lists)."""
        _check_inputs(texts)
        return await self._embed_checked(texts)

    async def _embed_checked(self, texts: Sequence[str]) -> np.ndarray:
        """``aembed_array`` for inputs already checked (a query is checked once, by name)."""
        if not texts:
            return np.zeros((0, self.dimensions or 0), dtype=np.float32)
        unique: dict[str, int] = {}
        for text in texts:
            unique.setdefault(text, len(unique))
        cache = self.cache
        vectors: dict[str, np.ndarray] = (
            cache.get_many(self.model, self.dimensions, list(unique)) if cache else {}
        )
        given = _PREFILLED.get()
        if given is not None and given[0] is self:
            vectors.update((t, given[1][t]) for t in unique if t not in vectors and t in given[1])
        misses = [text for text in unique if text not in vectors]
        bad: dict[str, str] = {}
        if misses:
            split = self._split(misses, texts)
            piece_vectors, failed = await self._embed_pieces(split)
            fresh: dict[str, np.ndarray] = {}
            for u, rows in enumerate(split.groups):
                if any(piece_vectors[p] is None for p in rows):
                    bad[misses[u]] = next(failed[p] for p in rows if p in failed)
                elif len(rows) == 1:
                    fresh[misses[u]] = piece_vectors[rows[0]]  # type: ignore[assignment]
                else:  # a long text: length-weighted average of its chunks, renormalised
                    stacked = np.stack([piece_vectors[p] for p in rows])  # type: ignore[misc]
                    mean = np.average(stacked, axis=0, weights=[split.tokens[p] for p in rows])
                    fresh[misses[u]] = (mean / np.linalg.norm(mean)).astype(np.float32)
            if cache is not None and fresh:
                cache.put_many(self.model, self.dimensions, fresh)
            vectors.update(fresh)
        dims = {v.shape[0] for v in vectors.values()}
        if len(dims) > 1:
            raise EmbeddingResponseError(
                f"vectors of different sizes {sorted(dims)} for one model (a cache written with "
                "other settings?)"
            )
        dim = next(iter(dims), self.dimensions or 0)
        result = np.zeros((len(texts), dim), dtype=np.float32)
        for i, text in enumerate(texts):
            if text in vectors:
                result[i] = vectors[text]
        if bad:
            failed_inputs = {i: bad[t] for i, t in enumerate(texts) if t in bad}
            rows_out = [
                None if i in failed_inputs else result[i].tolist() for i in range(len(texts))
            ]
            raise EmbeddingInputError(failed_inputs, rows_out)
        return result

    def _split(self, unique: list[str], texts: Sequence[str]) -> _Split:
        """Texts as sent: long ones split into context-sized chunks (or rejected)."""
        encoding = encoding_for(self.model)
        split = _Split()
        for text in unique:
            tokens = encode(text, self.model)  # any length: huge texts are encoded in pieces
            if len(tokens) > self.context_length and self.long_text == "reject":
                raise ValueError(
                    f"text {list(texts).index(text)} has {len(tokens)} tokens, over the model's "
                    f"context of {self.context_length}; shorten it or set long_text='average'"
                )
            chunks = [
                tokens[i : i + self.context_length]
                for i in range(0, len(tokens), self.context_length)
            ]
            group = []
            for chunk in chunks:
                group.append(len(split.pieces))
                split.pieces.append(text if len(chunks) == 1 else encoding.decode(chunk))
                split.tokens.append(len(chunk))
            split.groups.append(group)
        return split

    def _size(self, split: _Split, limits: tuple[float | None, float | None] = (None, None)) -> int:
        """Texts per request. ``limits``: the (requests, tokens) per minute the limiter holds
        for the key, which size the requests when no ``batch_size`` is set (``_per_request``)."""
        settings = self.pool.config.performance.batch_embeddings
        size = self.batch_size or settings.texts_per_request
        if size is not None:
            return size
        return _per_request(split.tokens, *limits, in_flight=self._requests_in_flight())

    def _requests_in_flight(self) -> int:
        """Requests of one call at once: ``max_concurrent_batches``, else the pool's."""
        settings = self.pool.config.performance.batch_embeddings
        return self.max_concurrent_batches or settings.requests_in_flight

    def _batches(self, split: _Split, size: int) -> list[list[int]]:
        """``split``'s pieces grouped into requests of at most ``size`` texts."""
        batches: list[list[int]] = []
        current: list[int] = []
        tokens = 0
        for i, cost in enumerate(split.tokens):
            if current and (len(current) >= size or tokens + cost > self.max_tokens_per_request):
                batches.append(current)
                current, tokens = [], 0
            current.append(i)
            tokens += cost
        if current:
            batches.append(current)
        return batches

    async def _embed_pieces(self, split: _Split) -> tuple[list[np.ndarray | None], dict[int, str]]:
        pieces = split.pieces
        pool = self.pool
        key = self.api_key.get_secret_value() if self.api_key else None
        client = pool.async_client(base_url=self.base_url, api_key=key, max_retries=0)
        guard = pool.guards.guard(
            Key(str(client.base_url).rstrip("/"), self.model, tenant_of(client.api_key))
        )
        settings = pool.config.performance.batch_embeddings
        gate = asyncio.Semaphore(self._requests_in_flight())
        vectors: list[np.ndarray | None] = [None] * len(pieces)
        failed: dict[int, str] = {}
        expected = self.dimensions or NATIVE_DIMENSIONS.get(self.model)

        limits: tuple[float | None, float | None] = (None, None)
        if guard.limiter is not None:
            limits = guard.limiter.per_minute(guard.key)
        size = self._size(split, limits)

        async def send_rows(inputs: list[str]) -> tuple[np.ndarray, Any]:
            body: dict[str, Any] = {"model": self.model, "input": inputs}
            body["encoding_format"] = "base64"
            if self.dimensions is not None:
                body["dimensions"] = self.dimensions
            # The SDK's documented raw `post`: its `embeddings.create` walks every input
            # string through a type-driven transform, a quarter of the client's CPU here.
            response = await client.post("/embeddings", cast_to=httpx2.Response, body=body)
            # decoded inside the attempt: a malformed body is retried and counted as the
            # endpoint's failure, like any other fault of the server
            return decode_vectors(_payload(response), len(inputs), expected), response.headers

        coalescer = self._coalescer(guard, send_rows) if settings.coalesce else None

        async def send(batch: list[int]) -> None:
            inputs = [pieces[i] for i in batch]
            tokens = sum(split.tokens[i] for i in batch)
            if coalescer is not None:
                async with gate:
                    answers = await coalescer.embed(
                        inputs,
                        [split.tokens[i] for i in batch],
                        max_texts=size,
                        max_tokens=self.max_tokens_per_request,
                    )
                for i, answer in zip(batch, answers, strict=True):
                    if isinstance(answer, str):
                        failed[i] = answer
                    else:
                        vectors[i] = answer
                return

            def settle(answer: tuple[np.ndarray, Any], reservation: Any) -> None:
                if guard.limiter is not None:
                    guard.limiter.observe(guard.key, answer[1])

            async def attempt() -> tuple[np.ndarray, Any]:
                return await send_rows(inputs)

            try:
                async with gate:
                    rows, _ = await guard.run(attempt, tokens=tokens, on_result=settle)
            except openai.BadRequestError as exc:
                if len(batch) == 1:
                    failed[batch[0]] = _reason(exc)
                    return
                half = len(batch) // 2  # find the bad input; embed the rest
                await _gather(send(batch[:half]), send(batch[half:]))
                return
            for i, row in zip(batch, rows, strict=True):
                vectors[i] = row

        await _gather(*(send(batch) for batch in self._batches(split, size)))
        return vectors, failed

    def _coalescer(self, guard: Guard, send_rows: SendRows) -> Coalescer:
        """The queue this call's requests join: one per event loop, endpoint, model, tenant and
        size on the pool (see ``pool._coalesce``)."""
        queues = self.pool.coalescers.setdefault(asyncio.get_running_loop(), {})
        limit = self.pool.config.performance.keys.max_keys
        coalescer = recent(
            queues,
            (guard.key, self.dimensions),
            lambda: Coalescer(guard, send_rows, _reason),
            limit,
        )
        return cast(Coalescer, coalescer)

    # -- sync callers run the async path on the portal loop (see _portal) ----------------------

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return _portal.run(self.aembed_documents(texts))

    def embed_query(self, text: str) -> list[float]:
        return _portal.run(self.aembed_query(text))


async def _gather(*coros: Coroutine[Any, Any, None]) -> None:
    """Run under a TaskGroup (a failure cancels the rest) and raise the first error itself,
    not wrapped in an ExceptionGroup: callers catch EmbeddingResponseError, not groups."""
    try:
        async with asyncio.TaskGroup() as tg:
            for coro in coros:
                tg.create_task(coro)
    except BaseExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def _per_request(
    tokens: Sequence[int], rpm: float | None, tpm: float | None, in_flight: int = 1
) -> int:
    """Texts per request when none is set: enough tokens in each that the requests-per-minute
    limit binds no earlier than the tokens-per-minute one, with half again to spare (100 short
    texts a request against 3000 RPM / 5M TPM reach 0.66 of the token limit: RPM binds first),
    but no more: small requests pipeline (the server makes one answer while the client reads
    the last). 100 to 2048 texts (the API's cap).

    With no limits known yet (a fresh pool, a server that announces none): the call spread over
    the ``in_flight`` requests that may run at once, 100 to ``_UNKNOWN_MAX_PER_REQUEST`` texts
    (OpenAIEmbeddings' ``chunk_size``). Why: 100 a request sent 20,000 texts as 200 requests
    where OpenAIEmbeddings sends 20, and the per-second rate the limiter learns from the first
    answers then bound them: 6.1 s against its 4.5 s."""
    if not tokens or rpm is None or tpm is None or rpm <= 0:
        spread = math.ceil(len(tokens) / max(1, in_flight))
        return min(_UNKNOWN_MAX_PER_REQUEST, max(_MIN_PER_REQUEST, spread))
    mean = sum(tokens) / len(tokens)
    wanted = 1.5 * tpm / rpm / max(mean, 1.0)
    return int(min(MAX_INPUTS_PER_REQUEST, max(_MIN_PER_REQUEST, math.ceil(wanted))))


def _check_inputs(texts: Sequence[Any]) -> None:
    if isinstance(texts, str):
        raise TypeError("embed_documents takes a list of strings, not one string")
    for i, text in enumerate(texts):
        _check_input(text, f"text {i}")


def _check_input(text: Any, name: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{name} is {a_kind(text)}, not a str")
    if not text.strip():
        raise ValueError(f"{name} is empty or only whitespace; the API rejects it")
    if (at := lone_surrogate(text)) is not None:
        raise ValueError(
            f"{name} has a lone surrogate at character {at}: it is not valid Unicode "
            "and cannot be sent"
        )


def _reason(exc: openai.BadRequestError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    message = body.get("message") or (body.get("error") or {}).get("message") or str(exc)
    return f"HTTP 400: {message}"


def _payload(response: httpx2.Response) -> dict[str, Any]:
    """The JSON object of a 200 answer, or ``MalformedResponseError`` (transient: retried)."""
    try:
        payload = json.loads(response.content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedResponseError(
            f"the embeddings endpoint answered 200 with a body that is not JSON ({exc})"
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise MalformedResponseError("the embeddings endpoint answered 200 without a data list")
    if not all(isinstance(item, dict) for item in payload["data"]):
        raise MalformedResponseError("the embeddings endpoint answered items that are not objects")
    return payload
