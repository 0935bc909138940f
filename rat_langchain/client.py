"""ClientPool: one shared ``openai.AsyncOpenAI`` (and sync ``OpenAI``) per endpoint, over one pooled
HTTP client per event loop, with limits, timeouts and guards from the config, and the LangChain
model objects made on them.

Why: a ``ChatOpenAI`` built the default way brings its own client; 1000 concurrent calls then open
1000 TCP connections and nothing bounds them. Every model object made by a pool shares its sockets,
and the pool's HTTP client works from any event loop (see ``_http``).
"""

from __future__ import annotations

from typing import Any

from langchain_openai import OpenAIEmbeddings

from rat_langchain._clients import Clients
from rat_langchain.chat import ResilientChatOpenAI
from rat_langchain.embeddings import PooledOpenAIEmbeddings

__all__ = ["ClientPool"]


class ClientPool(Clients):
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
        kwargs.setdefault("chunk_size", self.config.performance.batch_embeddings.texts_per_request)
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
