"""ClientPool: one shared ``openai.AsyncOpenAI`` (and sync ``OpenAI``) per endpoint, over one pooled
HTTP client per event loop, with limits and timeouts from the config.

Why: a ``ChatOpenAI`` built the default way brings its own client; 1000 concurrent calls then open
1000 TCP connections and nothing bounds them. Every model object made by a pool shares its sockets,
and the pool's HTTP client works from any event loop (see ``_http``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import httpx
import httpx2
import openai
from langchain_openai import OpenAIEmbeddings

from rat_langchain import _http
from rat_langchain._guard import Guard
from rat_langchain.breaker import BreakerRegistry
from rat_langchain.chat import ResilientChatOpenAI
from rat_langchain.config import RatConfig
from rat_langchain.errors import ConfigError, PoolClosedError
from rat_langchain.metrics import Metrics
from rat_langchain.ratelimit import RateLimiter
from rat_langchain.retry import RetryPolicy

if TYPE_CHECKING:
    from rat_langchain.embedding_cache import EmbeddingCache
    from rat_langchain.embeddings import PooledOpenAIEmbeddings

__all__ = ["ClientPool"]

OPENAI_BASE_URL = "https://api.openai.com/v1"


@functools.cache
def _platform() -> Any:
    from openai._base_client import get_platform

    return get_platform()


def _prime_platform(client: openai.AsyncOpenAI) -> None:
    """Fill in the SDK's platform tag now.

    The SDK computes it on the first request of each client in a worker thread; when hundreds of
    first requests start together, each one does, and the default executor grows to its maximum.
    Computing it once up front keeps the thread count flat whatever the concurrency.
    """
    if getattr(client, "_platform", "unknown") is None:
        client._platform = _platform()


def _fingerprint(api_key: str) -> str:
    """A short, one-way tag of the key: enough to tell endpoints apart, useless to an attacker."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _Endpoint:
    base_url: str
    key_fingerprint: str
    organization: str | None

    def __repr__(self) -> str:
        return f"<endpoint {self.base_url} key={self.key_fingerprint}>"


class ClientPool:
    """Shared, pooled OpenAI clients for every chain in the process.

    Example::

        async with ClientPool(RatConfig.load("config.yaml")) as pool:
            llm = pool.chat_model(model="gpt-4o-mini")        # a ChatOpenAI on the pooled client
            chain = prompt | llm | StrOutputParser()            # existing chains change one line
            await chain.abatch(inputs)

    The endpoint of each call comes from its ``base_url=`` / ``api_key=``, else the config's
    ``endpoint`` section, else ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``. The API key is a secret:
    it appears in no repr, log line or error raised here.

    A user's own ``http_client`` (``httpx`` or ``httpx2``) is used as given; it is then the user's
    to close, and it is bound to whichever loop first uses it.
    """

    def __init__(
        self,
        config: RatConfig | None = None,
        *,
        http_client: httpx.AsyncClient | httpx2.AsyncClient | None = None,
        sync_http_client: httpx.Client | httpx2.Client | None = None,
        limiter: RateLimiter | None = None,
        breakers: BreakerRegistry | None = None,
    ) -> None:
        self.config = config if config is not None else RatConfig.load()
        perf = self.config.performance
        pooling = perf.connection_pooling
        self.metrics = Metrics()
        # Shared by every model this pool makes: one quota and one breaker per (endpoint, model).
        self.limiter = limiter or (
            _limiter_class(perf.rate_limiting.backend).from_config(
                perf.rate_limiting,
                max_concurrency=perf.parallel_execution.max_parallel_llm_calls,
            )
            if perf.rate_limiting.enabled
            else None
        )
        self.breakers = breakers or (
            BreakerRegistry(
                perf.circuit_breaker,
                shared=_shared_breakers(perf.rate_limiting.redis_url)
                if perf.circuit_breaker.share_open_state
                else None,
                listeners=[self.metrics.record_breaker],
            )
            if perf.circuit_breaker.enabled
            else None
        )
        self.retry = RetryPolicy.from_config(perf.retries)
        transport = _http.DEFAULT_TRANSPORT if pooling.transport == "auto" else pooling.transport
        self._settings = _http.HttpSettings(
            transport=transport,
            max_connections=pooling.max_connections,
            max_keepalive=pooling.keepalive,
            keepalive_expiry_s=pooling.keepalive_expiry_s,
            connect_timeout_s=pooling.connect_timeout_s,
            request_timeout_s=pooling.request_timeout_s,
            connections=self.metrics.connections,
        )
        self._embedding_cache: EmbeddingCache | None = None
        self._user_http = http_client
        self._user_sync_http = sync_http_client
        self._http: _http.PerLoopHttpx2Client | _http.PerLoopHttpxClient | None = None
        self._sync_http: httpx2.Client | None = None
        self._async: dict[tuple[_Endpoint, int], openai.AsyncOpenAI] = {}
        self._sync: dict[tuple[_Endpoint, int], openai.OpenAI] = {}
        self._closed = False

    # -- endpoint resolution -------------------------------------------------------------------

    def _resolve(
        self, base_url: str | None, api_key: str | None, organization: str | None
    ) -> tuple[_Endpoint, str]:
        endpoint = self.config.endpoint
        url = (
            base_url or endpoint.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL
        ).rstrip("/")
        key = (
            api_key
            or (endpoint.api_key.get_secret_value() if endpoint.api_key else None)
            or os.environ.get("OPENAI_API_KEY")
        )
        if not key:
            raise ConfigError(
                [
                    (
                        "endpoint.api_key",
                        "no API key: pass api_key=, set endpoint.api_key in config.yaml, "
                        "or set OPENAI_API_KEY",
                    )
                ]
            )
        org = organization or endpoint.organization or os.environ.get("OPENAI_ORG_ID")
        return _Endpoint(url, _fingerprint(key), org), key

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosedError("this ClientPool is closed; create a new one")

    @property
    def transport(self) -> str:
        """The HTTP transport in use: "sdk", "aiohttp", "httpx", or "user" for a given client."""
        return "user" if self._user_http is not None else self._settings.transport

    def _max_retries(self, max_retries: int | None) -> int:
        if max_retries is not None:
            return max_retries
        retries = self.config.performance.retries
        return retries.max_attempts - 1 if retries.enabled else 0

    # -- raw openai clients --------------------------------------------------------------------

    def async_client(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        organization: str | None = None,
        max_retries: int | None = None,
    ) -> openai.AsyncOpenAI:
        """The shared ``AsyncOpenAI`` of an endpoint; usable from any event loop."""
        self._check_open()
        endpoint, key = self._resolve(base_url, api_key, organization)
        retries = self._max_retries(max_retries)
        client = self._async.get((endpoint, retries))
        if client is None:
            if self._user_http is None and self._http is None:
                self._http = _http.per_loop_client(self._settings)
            client = openai.AsyncOpenAI(
                api_key=key,
                base_url=endpoint.base_url,
                organization=endpoint.organization,
                timeout=self._settings.timeout(),
                max_retries=retries,
                # the SDK accepts httpx and httpx2 clients at run time; its stubs name httpx2 only
                http_client=self._user_http or self._http,  # type: ignore[arg-type]
            )
            _prime_platform(client)
            self._async[(endpoint, retries)] = client
        return client

    def sync_client(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        organization: str | None = None,
        max_retries: int | None = None,
    ) -> openai.OpenAI:
        """The shared sync ``OpenAI`` of an endpoint (thread-safe, one connection pool)."""
        self._check_open()
        endpoint, key = self._resolve(base_url, api_key, organization)
        retries = self._max_retries(max_retries)
        client = self._sync.get((endpoint, retries))
        if client is None:
            if self._user_sync_http is None and self._sync_http is None:
                self._sync_http = _http.sync_client(self._settings)
            client = openai.OpenAI(
                api_key=key,
                base_url=endpoint.base_url,
                organization=endpoint.organization,
                timeout=self._settings.timeout(),
                max_retries=retries,
                http_client=self._user_sync_http or self._sync_http,  # type: ignore[arg-type]
            )
            self._sync[(endpoint, retries)] = client
        return client

    # -- LangChain model objects ---------------------------------------------------------------

    def guard(self, base_url: str, model: str) -> Guard:
        """The deadline/breaker/limiter/retry policy for one (endpoint, model), from the config."""
        key = (base_url, model)
        return Guard(
            key=key,
            limiter=self.limiter,
            breaker=self.breakers.get(key) if self.breakers is not None else None,
            retry=self.retry,
            timeout=self.config.performance.retries.timeout_s,
            endpoint=base_url,
            metrics=self.metrics,
        )

    def chat_model(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        organization: str | None = None,
        **kwargs: Any,
    ) -> ResilientChatOpenAI:
        """A ``ChatOpenAI`` on the pooled clients, with the config's limiter, breaker and retries.

        Other keyword arguments go to ``ChatOpenAI``. langchain-openai rebuilds its own root
        client unless both the root client and its resource are given, so all four are passed.
        A timeout is always set. The SDK's own retries are off: tenacity retries instead, once.
        """
        name = model or self.config.endpoint.chat_model
        max_retries = kwargs.pop("max_retries", 0)
        clients = self._model_clients(base_url, api_key, organization, max_retries)
        endpoint, key = self._resolve(base_url, api_key, organization)
        kwargs.setdefault("include_response_headers", self.limiter is not None)
        timeout: Any = self._settings.request_timeout_s  # hashable: LangChain caches by it
        if clients is not None:
            sync, async_ = clients
            timeout = self._settings.timeout()
            kwargs.update(
                root_client=sync,
                client=sync.chat.completions,
                root_async_client=async_,
                async_client=async_.chat.completions,
            )
        # with pooling disabled, LangChain builds its own clients (the baseline to compare)
        llm = ResilientChatOpenAI(
            model=name,
            base_url=endpoint.base_url,
            api_key=key,
            organization=endpoint.organization,
            timeout=timeout,
            max_retries=max_retries,
            **kwargs,
        )
        return llm.with_guard(self.guard(endpoint.base_url, name))

    def embeddings(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        **kwargs: Any,
    ) -> PooledOpenAIEmbeddings:
        """A :class:`~rat_langchain.PooledOpenAIEmbeddings` on this pool: batched, concurrent,
        validated, under the pool's limiter, breaker and retries."""
        from rat_langchain.embeddings import PooledOpenAIEmbeddings  # imports this module

        self._check_open()
        caching = self.config.performance.caching
        if caching.embeddings and "cache" not in kwargs:
            kwargs["cache"] = self.embedding_cache()
        embeddings = PooledOpenAIEmbeddings(
            model=model or self.config.endpoint.embedding_model,
            base_url=base_url,
            api_key=api_key,
            config=self.config,
            **kwargs,
        )
        return embeddings.with_pool(self)

    def embedding_cache(self) -> EmbeddingCache:
        """The pool's on-disk embedding cache (``caching.embedding_cache_path``), opened once."""
        if self._embedding_cache is None:
            from rat_langchain.embedding_cache import EmbeddingCache

            self._embedding_cache = EmbeddingCache(
                self.config.performance.caching.embedding_cache_path
            )
        return self._embedding_cache

    def openai_embeddings(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        organization: str | None = None,
        **kwargs: Any,
    ) -> OpenAIEmbeddings:
        """langchain-openai's own ``OpenAIEmbeddings`` on the pooled clients (no batching
        concurrency or validation of ours; for code that needs that exact class).

        ``check_embedding_ctx_length`` defaults to False here: True makes langchain-openai download
        tiktoken's encodings, which fails offline.
        """
        name = model or self.config.endpoint.embedding_model
        kwargs.setdefault("check_embedding_ctx_length", False)
        kwargs.setdefault("chunk_size", self.config.performance.batch_embeddings.batch_size)
        clients = self._model_clients(
            base_url, api_key, organization, kwargs.pop("max_retries", None)
        )
        endpoint, key = self._resolve(base_url, api_key, organization)
        common: dict[str, Any] = {
            "model": name,
            "base_url": endpoint.base_url,
            "api_key": key,
            "organization": endpoint.organization,
            "timeout": self._settings.request_timeout_s,
        }
        if clients is None:
            return OpenAIEmbeddings(**common, max_retries=self._max_retries(None), **kwargs)
        sync, async_ = clients
        return OpenAIEmbeddings(
            **common,
            max_retries=async_.max_retries,
            client=sync.embeddings,
            async_client=async_.embeddings,
            **kwargs,
        )

    def _model_clients(
        self,
        base_url: str | None,
        api_key: str | None,
        organization: str | None,
        max_retries: int | None,
    ) -> tuple[openai.OpenAI, openai.AsyncOpenAI] | None:
        self._check_open()
        if not self.config.performance.connection_pooling.enabled:
            return None
        args = {"base_url": base_url, "api_key": api_key, "organization": organization}
        return (
            self.sync_client(**args, max_retries=max_retries),
            self.async_client(**args, max_retries=max_retries),
        )

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Close every client this pool made (not a user's own ``http_client``)."""
        if self._closed:
            return
        self._closed = True
        if self._http is not None:
            await self._http.aclose()
        for shared in (self.limiter, self.breakers.shared if self.breakers else None):
            closer = getattr(shared, "aclose", None)
            if closer is not None:
                await closer()
        self._close_sync()
        self._async.clear()

    def close(self) -> None:
        """Close every client this pool made, from sync code: the async ones too (those the sync
        entry points used live on a background loop, and would otherwise stay open until the
        process exits). Inside a running event loop only the sync clients can be closed here;
        ``await pool.aclose()`` closes the rest."""
        if self._closed:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self.aclose())  # reaches clients on other loops (see _http._PerLoop)
            return
        self._close_sync()

    def _close_sync(self) -> None:
        if self._embedding_cache is not None:
            self._embedding_cache.close()
            self._embedding_cache = None
        if self._sync_http is not None:
            self._sync_http.close()
            self._sync_http = None
        self._sync.clear()

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        endpoints = sorted({repr(endpoint) for endpoint, _ in (*self._async, *self._sync)})
        return (
            f"ClientPool(transport={self.transport!r}, "
            f"max_connections={self._settings.max_connections}, "
            f"endpoints=[{', '.join(endpoints)}], closed={self._closed})"
        )


def _limiter_class(backend: str) -> type[RateLimiter]:
    if backend == "redis":
        from rat_langchain.shared import RedisRateLimiter

        return RedisRateLimiter
    return RateLimiter


def _shared_breakers(url: str) -> Any:
    from rat_langchain.shared import SharedBreakerState

    return SharedBreakerState(url)
