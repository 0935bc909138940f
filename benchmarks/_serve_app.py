"""The services ``bench_serve`` loads, each in its own uvicorn process (one worker).

``pooled`` is examples/fastapi_rag.py as it stands (one ``ClientPool`` and one store in the
lifespan; ``/ask`` async, ``/ask-sync`` a plain ``def`` route). ``naive`` is what a team
writes first: the store built once at startup, but a new ``OpenAIEmbeddings()`` and
``ChatOpenAI()`` in every request, LangChain's defaults otherwise (the origin of this project:
such a service hung at 5+ concurrent users).

    python -m benchmarks._serve_app pooled|naive BASE_URL

prints the port it listens on (a free loopback one), then serves until killed.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import sys
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from langchain_core.output_parsers import StrOutputParser
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from rat_langchain import FaissStore, RatConfig

KEY = "sk-bench-serve"


def _example() -> ModuleType:
    """examples/fastapi_rag.py, imported as the package it is in the repository (a namespace
    package: the root is on the path wherever tests and benchmarks run)."""
    return importlib.import_module("examples.fastapi_rag")


_EXAMPLE = _example()
Question = _EXAMPLE.Question  # module names: FastAPI resolves the routes' annotations here
Answer = _EXAMPLE.Answer


def pooled(base_url: str) -> FastAPI:
    config = RatConfig.from_dict({"endpoint": {"base_url": base_url, "api_key": KEY}}, env={})
    app: FastAPI = _EXAMPLE.create_app(config)
    app.get("/healthz")(_healthz)
    return app


async def _healthz() -> dict[str, bool]:
    return {"ok": True}


def naive(base_url: str) -> FastAPI:
    example = _EXAMPLE

    def embeddings() -> OpenAIEmbeddings:
        return OpenAIEmbeddings(  # type: ignore[call-arg]
            model="text-embedding-3-small",
            base_url=base_url,
            api_key=KEY,
            check_embedding_ctx_length=False,
        )

    def llm() -> ChatOpenAI:
        return ChatOpenAI(  # type: ignore[call-arg]
            model="gpt-4o-mini", base_url=base_url, api_key=KEY, max_tokens=200
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        texts = [p.read_text() for p in sorted(example.CORPUS.glob("*.md"))]
        app.state.store = await FaissStore.afrom_texts(texts, embeddings())
        yield

    app = FastAPI(lifespan=lifespan)
    chain_tail = example.PROMPT

    async def answer(store: FaissStore, question: str) -> str:
        vector = await embeddings().aembed_query(question)  # a new client per request
        docs = await store.asimilarity_search_by_vector(vector, k=3)
        context = "\n\n".join(doc.page_content for doc in docs)
        chain: Any = chain_tail | llm() | StrOutputParser()
        return str(await chain.ainvoke({"context": context, "question": question}))

    def answer_sync(store: FaissStore, question: str) -> str:
        vector = embeddings().embed_query(question)
        docs = store.similarity_search_by_vector(vector, k=3)
        context = "\n\n".join(doc.page_content for doc in docs)
        chain: Any = chain_tail | llm() | StrOutputParser()
        return str(chain.invoke({"context": context, "question": question}))

    @app.post("/ask")
    async def ask(question: Question, request: Request) -> Answer:  # type: ignore[valid-type]
        return Answer(answer=await answer(request.app.state.store, question.question))

    @app.post("/ask-sync")
    def ask_sync(question: Question, request: Request) -> Answer:  # type: ignore[valid-type]
        return Answer(answer=answer_sync(request.app.state.store, question.question))

    app.get("/healthz")(_healthz)
    return app


def main() -> None:
    kind, base_url = sys.argv[1], sys.argv[2]
    app = {"pooled": pooled, "naive": naive}[kind](base_url)
    listening = socket.socket()
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind(("127.0.0.1", 0))
    listening.listen(2048)  # 1000 users connect at once: a short backlog refuses them
    print(listening.getsockname()[1], flush=True)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="error", backlog=2048, timeout_keep_alive=30)
    )
    server.run(sockets=[listening])


if __name__ == "__main__":
    main()
