"""The request path: what a chain calls, and what sends its requests.

``pool`` (``ClientPool``: one pooled client per endpoint, and the model objects made on it),
``_clients`` (the pool's connections and guards, which the embeddings need without the model
factories), ``chat`` (``ResilientChatOpenAI``), ``embeddings`` (``PooledOpenAIEmbeddings``),
``runnables`` (``resilient()`` around any Runnable), ``batcher`` (``LLMBatcher``) and ``_http``
(one pooled HTTP client per event loop). Nothing is re-exported here: the public names are in
``rat_langchain/__init__.py``, loaded lazily.
"""
