"""One pooled HTTP client per event loop, behind a single client object that any loop can use.

Why: an async HTTP client is bound to the loop that first used it. langchain-openai caches one per
process, so code that calls ``asyncio.run`` twice gets "Event loop is closed" (langchain issue
35783). Here the object handed to the openai SDK is loop-agnostic; each ``send`` goes to the inner
pooled client of the running loop, created on first use there and closed when that loop shuts down
(``asyncio.run`` and ``asyncio.Runner`` call ``loop.shutdown_asyncgens()``, which runs the
``finally`` of a generator we park on the loop for exactly this).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl
import weakref
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import httpx2
import openai

from rat_langchain.errors import PoolClosedError

Transport = Literal["sdk", "aiohttp", "httpx"]
# Measured in benchmarks/bench_transport.py (docs/benchmarks.md): aiohttp was fastest at 64 and
# 1000 concurrent calls, the SDK's httpx2 transport second, plain httpx far behind.
DEFAULT_TRANSPORT: Transport = "aiohttp"


@dataclass
class _LoopEntry:
    client: Any
    closer: AsyncGenerator[None, None]
    started: bool = False


@dataclass(frozen=True)
class HttpSettings:
    """Connection limits and timeouts of one pool."""

    transport: Transport
    max_connections: int
    max_keepalive: int
    keepalive_expiry_s: float
    connect_timeout_s: float
    request_timeout_s: float
    extra: dict[str, Any] = field(default_factory=dict)
    # counts TCP connections opened vs reused (aiohttp transport; None: not counted)
    connections: Any = field(default=None, compare=False)

    def timeout(self) -> httpx2.Timeout:
        return httpx2.Timeout(self.request_timeout_s, connect=self.connect_timeout_s)

    def limits(self) -> httpx2.Limits:
        return httpx2.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_keepalive,
            keepalive_expiry=self.keepalive_expiry_s,
        )


def _ssl_context() -> ssl.SSLContext:
    """The process's TLS context for verified connections, as httpx builds it (the CA bundle,
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured).

    Why shared: building one loads the whole CA bundle, about 50 ms; every HTTP client built
    its own, and a pool builds its inner client at its first request on each loop, so a fresh
    pool's first answer came 50 ms after a plain ``ChatOpenAI``'s (which builds its client when
    constructed). An ``SSLContext`` is safe to share between clients and threads; keyed by the
    variables so a changed bundle is read again."""
    return _ssl_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _ssl_context_for(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return httpx2.create_ssl_context()


def _inner_client(settings: HttpSettings) -> httpx2.AsyncClient | httpx.AsyncClient:
    if settings.transport == "aiohttp":
        client = openai.DefaultAioHttpClient(
            timeout=settings.timeout(), limits=settings.limits(), verify=_ssl_context()
        )
        if settings.connections is not None:
            _count_connections(client, settings)
        return client
    if settings.transport == "httpx":
        return httpx.AsyncClient(
            timeout=httpx.Timeout(settings.request_timeout_s, connect=settings.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_keepalive,
                keepalive_expiry=settings.keepalive_expiry_s,
            ),
            follow_redirects=True,
            verify=_ssl_context(),
        )
    return openai.DefaultAsyncHttpx2Client(
        timeout=settings.timeout(), limits=settings.limits(), verify=_ssl_context()
    )


def _count_connections(client: Any, settings: HttpSettings) -> None:
    """Give the aiohttp transport a session that counts connections opened and reused (an
    aiohttp ``TraceConfig``), with the connector the transport would have built itself. The
    transport takes a session factory by design; if its shape ever changes, nothing is
    counted and nothing breaks."""
    import aiohttp

    transport = getattr(client, "_transport", None)
    if transport is None or getattr(transport, "client", ...) is not None:
        return
    counter = settings.connections

    async def opened(*_: Any) -> None:
        counter.opened += 1

    async def reused(*_: Any) -> None:
        counter.reused += 1

    def session() -> aiohttp.ClientSession:
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(opened)
        trace.on_connection_reuseconn.append(reused)
        connector = aiohttp.TCPConnector(
            limit=settings.max_connections,
            keepalive_timeout=settings.keepalive_expiry_s,
            ssl=getattr(transport, "ssl_context", True),
        )
        return aiohttp.ClientSession(connector=connector, trace_configs=[trace])

    transport.client = session


class _PerLoop:
    """Inner clients keyed by event loop; the loop-agnostic facade delegates ``send`` here."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopEntry] = (
            weakref.WeakKeyDictionary()
        )
        self.closed = False
        self.created = 0

    async def current(self) -> Any:
        loop = asyncio.get_running_loop()
        entry = self._by_loop.get(loop)
        if entry is None:
            if self.closed:
                raise PoolClosedError("this HTTP client pool is closed; create a new ClientPool")
            client = self._factory()
            entry = _LoopEntry(client, self._close_with_loop(client))
            self._by_loop[loop] = entry
            self.created += 1
        if not entry.started:
            entry.started = True
            await anext(entry.closer)  # parks the generator on this loop: see the module docstring
        return entry.client

    async def _close_with_loop(self, client: Any) -> AsyncGenerator[None, None]:
        # Holds no reference to its loop, so the WeakKeyDictionary can still let the loop go.
        try:
            yield
        finally:
            loop = asyncio.get_running_loop()
            if (entry := self._by_loop.get(loop)) is not None and entry.client is client:
                del self._by_loop[loop]
            await client.aclose()

    @property
    def loops(self) -> int:
        return len(self._by_loop)

    async def aclose(self) -> None:
        """Close this loop's client now; clients of other loops close with their loops."""
        self.closed = True
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, entry in list(self._by_loop.items()):
            if loop is running and entry.started:
                await entry.closer.aclose()
            elif loop.is_running() and entry.started:
                future = asyncio.run_coroutine_threadsafe(entry.closer.aclose(), loop)
                await asyncio.wrap_future(future)
            self._by_loop.pop(loop, None)


# aiohttp's "Cannot connect to host h:1 ssl:default [...]": the setting, not a TLS attempt
_TLS_SETTING = re.compile(r" ssl:\S+")


def _refused(exc: BaseException) -> bool:
    """Whether the aiohttp transport's ``ConnectTimeout`` is really a failed connection: its
    exception map turns every ``aiohttp.ClientConnectorError`` (a refused port, an unknown
    host) into a timeout, so the SDK would report "Request timed out." for a server that is
    simply not there."""
    import aiohttp  # only this transport raises it; loaded by the time it has

    cause = exc.__cause__
    return isinstance(cause, aiohttp.ClientConnectorError) and not isinstance(
        cause, aiohttp.ServerTimeoutError | asyncio.TimeoutError
    )


class _PerLoopMixin:
    _per_loop: _PerLoop

    async def send(self, request: Any, **kwargs: Any) -> Any:
        inner = await self._per_loop.current()
        try:
            return await inner.send(request, **kwargs)
        except httpx2.ConnectTimeout as exc:
            if _refused(exc):
                message = str(exc)
                if request.url.scheme == "http":  # aiohttp names its TLS setting on plain HTTP
                    message = _TLS_SETTING.sub("", message)
                raise httpx2.ConnectError(message, request=request) from exc
            raise

    async def aclose(self) -> None:
        await self._per_loop.aclose()
        await super().aclose()  # type: ignore[misc]


class PerLoopHttpx2Client(_PerLoopMixin, httpx2.AsyncClient):
    """An ``httpx2.AsyncClient`` that routes each request to the running loop's pooled client."""

    def __init__(self, settings: HttpSettings) -> None:
        super().__init__(timeout=settings.timeout(), verify=_ssl_context())
        self._per_loop = _PerLoop(lambda: _inner_client(settings))


class PerLoopHttpxClient(_PerLoopMixin, httpx.AsyncClient):
    """The same over plain ``httpx``, kept so the transports can be compared side by side."""

    def __init__(self, settings: HttpSettings) -> None:
        super().__init__(
            timeout=httpx.Timeout(settings.request_timeout_s, connect=settings.connect_timeout_s),
            verify=_ssl_context(),
        )
        self._per_loop = _PerLoop(lambda: _inner_client(settings))


def per_loop_client(settings: HttpSettings) -> PerLoopHttpx2Client | PerLoopHttpxClient:
    if settings.transport == "httpx":
        return PerLoopHttpxClient(settings)
    return PerLoopHttpx2Client(settings)


def sync_client(settings: HttpSettings) -> httpx2.Client:
    """Sync clients are thread-safe and loop-free: one per pool is enough."""
    return openai.DefaultHttpx2Client(
        timeout=settings.timeout(), limits=settings.limits(), verify=_ssl_context()
    )
