"""The pooled clients and guards of a :class:`~rat_langchain.ClientPool`, without its model
factories: one shared ``openai.AsyncOpenAI`` (and sync ``OpenAI``) per endpoint over one pooled
HTTP client per event loop, and the guards built from the config.

Why apart from ``client.py``: the embeddings need these parts (their own when no pool is given)
and the pool makes embeddings; with both in one module they imported each other.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import urlsplit

import httpx
import httpx2
import openai

from rat_langchain.config import NO_KEY, RatConfig
from rat_langchain.errors import ConfigError, PoolClosedError
from rat_langchain.guards import build_guards
from rat_langchain.guards.breaker import BreakerRegistry
from rat_langchain.guards.key import tenant_of
from rat_langchain.guards.limiter import Limiter
from rat_langchain.guards.retry import RetryPolicy
from rat_langchain.metrics.collector import Metrics
from rat_langchain.pool import _http

if TYPE_CHECKING:
    from rat_langchain.index.embedding_cache import EmbeddingCache

__all__ = ["Clients", "recent"]

_C = TypeVar("_C", openai.OpenAI, openai.AsyncOpenAI)

OPENAI_BASE_URL = "https://api.openai.com/v1"

# Hosts that always need a key: OpenAI's own and Azure's. Any other host without one gets the
# placeholder NO_KEY, so a keyless local server works with nothing set (a hosted server that
# does need one answers 401, and ApiKeyError says no key was set).
_KEYED_HOSTS = ("openai.com", "azure.com", "azure-api.net")
# What an API key never holds: whitespace (a newline from a file would otherwise reach the
# header check of the HTTP client as "header injection") and other control characters.
_UNSAFE_KEY = re.compile(r"[\s\x00-\x1f\x7f]")


def _host(url: str) -> str:
    return (urlsplit(url).hostname or url).lower()


def _needs_key(url: str) -> bool:
    host = _host(url)
    return any(host == keyed or host.endswith("." + keyed) for keyed in _KEYED_HOSTS)


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


_V = TypeVar("_V")


def recent(table: dict[Any, _V], name: object, make: Callable[[], _V], limit: int) -> _V:
    """``table[name]``, made on first use, in a table that keeps the ``limit`` most recently
    used entries. Why: API keys, model names and sizes can be user input, and an SDK client or
    an embedding queue kept per value for ever is a memory hole in a multi-tenant service (the
    guards' state is bounded the same way, by ``performance.keys.max_keys``). Forgetting one is
    safe: whoever holds it keeps using it, and the next caller gets a new one."""
    found = table.pop(name, None)
    if found is None:
        found = make()
        while len(table) >= limit:
            del table[next(iter(table))]  # the least recently used: dicts keep order
    table[name] = found  # now the most recent
    return found


@dataclass(frozen=True)
class _Endpoint:
    base_url: str
    key_fingerprint: str
    organization: str | None

    def __repr__(self) -> str:
        return f"<endpoint {self.base_url} key={self.key_fingerprint}>"


class Clients:
    """Shared, pooled OpenAI clients and guards: :class:`~rat_langchain.ClientPool` without
    its model factories (see there for the endpoint rules, secrets and a user's own client)."""

    def __init__(
        self,
        config: RatConfig | None = None,
        *,
        http_client: httpx.AsyncClient | httpx2.AsyncClient | None = None,
        sync_http_client: httpx.Client | httpx2.Client | None = None,
        limiter: Limiter | None = None,
        breakers: BreakerRegistry | None = None,
    ) -> None:
        self.config = config if config is not None else RatConfig.load()
        pooling = self.config.performance.connection_pooling
        # Shared by every model this pool makes: one quota and one breaker per (endpoint, model).
        kwargs: dict[str, Any] = {}
        if limiter is not None:
            kwargs["limiter"] = limiter
        if breakers is not None:
            kwargs["breakers"] = breakers
        self.guards = build_guards(self.config, **kwargs)
        transport = _http.DEFAULT_TRANSPORT if pooling.transport == "auto" else pooling.transport
        self._settings = _http.HttpSettings(
            transport=transport,
            max_connections=pooling.max_connections,
            max_keepalive=pooling.keepalive,
            keepalive_expiry_s=pooling.keepalive_expiry_s,
            connect_timeout_s=pooling.connect_timeout_s,
            request_timeout_s=pooling.request_timeout_s,
            connections=self.guards.metrics.connections,
        )
        self._embedding_cache: EmbeddingCache | None = None
        self._user_http = http_client
        self._user_sync_http = sync_http_client
        self._http: _http.PerLoopHttpx2Client | _http.PerLoopHttpxClient | None = None
        self._sync_http: httpx2.Client | None = None
        self._async: dict[tuple[_Endpoint, int], openai.AsyncOpenAI] = {}
        self._sync: dict[tuple[_Endpoint, int], openai.OpenAI] = {}
        # the embedding queues (pool._coalesce), per event loop: a queue's waiters live on one
        self.coalescers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[Any, ...], Any]
        ] = weakref.WeakKeyDictionary()
        self._closed = False

    # -- endpoint resolution -------------------------------------------------------------------

    def _resolve(
        self, base_url: str | None, api_key: str | None, organization: str | None
    ) -> tuple[_Endpoint, str]:
        endpoint = self.config.endpoint
        url = (
            base_url
            or endpoint.base_url
            or os.environ.get("OPENAI_BASE_URL")
            or os.environ.get("OPENAI_API_BASE")  # langchain-openai's name for it
            or OPENAI_BASE_URL
        ).rstrip("/")
        key = (
            api_key
            or (endpoint.api_key.get_secret_value() if endpoint.api_key else None)
            or os.environ.get("OPENAI_API_KEY")
        )
        if not key:
            if _needs_key(url):
                raise ConfigError(
                    [
                        (
                            "endpoint.api_key",
                            f"no API key for {_host(url)}: pass api_key=, set endpoint.api_key "
                            "in config.yaml, or set OPENAI_API_KEY",
                        )
                    ]
                )
            key = NO_KEY  # a local server (Ollama, vLLM, LM Studio, llama.cpp) needs none
        elif _UNSAFE_KEY.search(key):
            raise ConfigError(
                [
                    (
                        "endpoint.api_key",
                        "the API key contains whitespace or a control character (a trailing "
                        "newline, as from a file or an echo?): strip it",
                    )
                ]
            )
        org = organization or endpoint.organization or os.environ.get("OPENAI_ORG_ID")
        return _Endpoint(url, tenant_of(key), org), key

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
        client = self._client(openai.AsyncOpenAI, base_url, api_key, organization, max_retries)
        _prime_platform(client)
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
        return self._client(openai.OpenAI, base_url, api_key, organization, max_retries)

    def _client(
        self,
        kind: type[_C],
        base_url: str | None,
        api_key: str | None,
        organization: str | None,
        max_retries: int | None,
    ) -> _C:
        """The one ``kind`` of SDK client of an endpoint, made on first use over the pool's
        HTTP client of that kind (async: one per event loop; sync: one, thread-safe)."""
        self._check_open()
        endpoint, key = self._resolve(base_url, api_key, organization)
        retries = self._max_retries(max_retries)
        made: dict[tuple[_Endpoint, int], Any] = (
            self._async if kind is openai.AsyncOpenAI else self._sync
        )
        return recent(
            made,
            (endpoint, retries),
            lambda: kind(
                api_key=key,
                base_url=endpoint.base_url,
                organization=endpoint.organization,
                timeout=self._settings.timeout(),
                max_retries=retries,
                http_client=self._http_client(kind is openai.AsyncOpenAI),
            ),
            self.config.performance.keys.max_keys,
        )

    def _http_client(self, is_async: bool) -> Any:
        """The HTTP client the SDK clients of one kind share: the user's, or the pool's."""
        if is_async:
            if self._user_http is None and self._http is None:
                self._http = _http.per_loop_client(self._settings)
            return self._user_http or self._http
        if self._user_sync_http is None and self._sync_http is None:
            self._sync_http = _http.sync_client(self._settings)
        return self._user_sync_http or self._sync_http

    # -- LangChain model objects ---------------------------------------------------------------

    @property
    def limiter(self) -> Limiter | None:
        return self.guards.limiter

    @property
    def breakers(self) -> BreakerRegistry | None:
        return self.guards.breakers

    @property
    def retry(self) -> RetryPolicy:
        return self.guards.retry

    @property
    def metrics(self) -> Metrics:
        return self.guards.metrics

    def embedding_cache(self) -> EmbeddingCache:
        """The pool's on-disk embedding cache (``caching.embedding_cache_path``), opened once."""
        if self._embedding_cache is None:
            from rat_langchain.index.embedding_cache import EmbeddingCache

            self._embedding_cache = EmbeddingCache(
                self.config.performance.caching.embedding_cache_path
            )
        return self._embedding_cache

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
        await self.guards.aclose()
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
            f"{type(self).__name__}(transport={self.transport!r}, "
            f"max_connections={self._settings.max_connections}, "
            f"endpoints=[{', '.join(endpoints)}], closed={self._closed})"
        )
