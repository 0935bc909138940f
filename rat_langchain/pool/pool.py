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
from pydantic import SecretStr

from rat_langchain._tokens import encoding_for
from rat_langchain.pool._clients import Clients
from rat_langchain.pool._direct import direct
from rat_langchain.pool.chat import ResilientChatOpenAI
from rat_langchain.pool.embeddings import PooledOpenAIEmbeddings

__all__ = ["ClientPool"]

# ChatOpenAI's second names for its own fields -> the name chat_model uses.
_ALIASES = {
    "model_name": "model",
    "openai_api_key": "api_key",
    "openai_api_base": "base_url",
    "openai_organization": "organization",
    "request_timeout": "timeout",
    "stop_sequences": "stop",
    "max_completion_tokens": "max_tokens",
}
# Keywords that make ChatOpenAI build or take a client of its own, and what to do instead.
_OWN_CLIENT = {
    "http_client": "pass it to ClientPool(sync_http_client=...) instead",
    "http_async_client": "pass it to ClientPool(http_client=...) instead",
    "client": "the pool provides the clients; use pool.sync_client() for raw calls",
    "async_client": "the pool provides the clients; use pool.async_client() for raw calls",
    "root_client": "the pool provides the clients; use pool.sync_client() for raw calls",
    "root_async_client": "the pool provides the clients; use pool.async_client() for raw calls",
    "openai_proxy": "give ClientPool an http_client that uses the proxy",
    "http_socket_options": "give ClientPool an http_client with these socket options",
}


def _canonical(kwargs: dict[str, Any], model: str | None) -> dict[str, Any]:
    """``kwargs`` with ChatOpenAI's second names mapped to one name each; the same setting
    given twice with two values is a ``TypeError`` naming both."""
    out = dict(kwargs)
    if model is not None:
        out.setdefault("model", model)
        if out["model"] != model:
            raise TypeError(f"model={model!r} and model={out['model']!r}: pass the model once")
    for alias, name in _ALIASES.items():
        if alias not in out:
            continue
        value = out.pop(alias)
        if name in out and out[name] != value:
            raise TypeError(f"{alias}= and {name}= are one setting with two values: pass one")
        out[name] = value
    return out


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

    def chat_model(self, model: str | None = None, **kwargs: Any) -> ResilientChatOpenAI:
        """A ``ChatOpenAI`` on the pooled clients, with the config's limiter, breaker and retries.

        Every ``ChatOpenAI`` keyword works with ``ChatOpenAI``'s meaning, under either of its
        names (``model``/``model_name``, ``api_key``/``openai_api_key``,
        ``base_url``/``openai_api_base``, ``organization``/``openai_organization``,
        ``timeout``/``request_timeout``, ``stop``/``stop_sequences``,
        ``max_tokens``/``max_completion_tokens``). ``timeout``, ``default_headers`` and
        ``default_query`` apply to this model's requests over the shared connections;
        ``max_retries=N`` means at most N+1 requests per call (the guard retries, the SDK does
        not). Keywords that would build a client of their own (``http_client``, ``client``,
        ``openai_proxy``, ...) cannot share the pool's connections and raise ``TypeError``
        saying what to do instead; nothing is silently dropped.
        """
        kwargs = _canonical(kwargs, model)
        if self.config.performance.connection_pooling.enabled:
            refused = sorted(set(kwargs) & set(_OWN_CLIENT))
            if refused:
                name = refused[0]
                raise TypeError(
                    f"chat_model({name}=...) builds a client of its own, which cannot share "
                    f"the pool's connections: {_OWN_CLIENT[name]}"
                )
        name = kwargs.pop("model", None) or self.config.endpoint.chat_model
        api_key = kwargs.pop("api_key", None)
        if isinstance(api_key, SecretStr):
            api_key = api_key.get_secret_value()
        endpoint, key = self._resolve(
            kwargs.pop("base_url", None), api_key, kwargs.pop("organization", None)
        )
        max_retries = kwargs.pop("max_retries", None)
        if max_retries is not None and max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        kwargs.setdefault("include_response_headers", self.limiter is not None)
        # The SDK never retries here: the guard does, so max_retries=N is N+1 requests at most.
        clients = self._model_clients(endpoint.base_url, key, endpoint.organization, 0)
        if clients is not None:
            options = {
                option: kwargs[field]
                for field, option in (
                    ("timeout", "timeout"),
                    ("default_headers", "default_headers"),
                    ("default_query", "default_query"),
                )
                if kwargs.get(field) is not None
            }
            sync, async_ = clients
            if options:  # a copy sharing the pool's HTTP client, with this model's options
                sync, async_ = sync.with_options(**options), async_.with_options(**options)
            kwargs.update(
                root_client=sync,
                client=direct(sync.chat.completions),  # see pool._direct: 0.65 ms less a call
                root_async_client=async_,
                async_client=direct(async_.chat.completions),
            )
        # a timeout is always set (hashable: LangChain caches by it)
        kwargs.setdefault("timeout", self._settings.request_timeout_s)
        chat = ResilientChatOpenAI(
            model=name,
            base_url=endpoint.base_url,
            api_key=key,
            organization=endpoint.organization,
            # with pooling disabled LangChain builds its own clients: their retries stay off too
            max_retries=max_retries if clients is not None else 0,
            rat_guards=self.guards,
            rat_max_attempts=None if max_retries is None else max_retries + 1,
            **kwargs,
        )
        if self.limiter is not None:
            # the limiter counts every request's tokens: the encoding's tables load now (about
            # 0.1 s, once a process), as ChatOpenAI builds its client when made, and not in
            # the first answer's time (a fresh pool's first call was 0.14 s behind plain's)
            encoding_for(name)
        return chat

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
        per_request = self.config.performance.batch_embeddings.texts_per_request
        if per_request is not None:  # else langchain-openai's own (1000 texts a request)
            kwargs.setdefault("chunk_size", per_request)
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
