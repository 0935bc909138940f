"""A FastAPI RAG service on one pool: the pattern for serving (docs/serving.md).

One ``ClientPool`` and one ``FaissStore`` per process, opened in the lifespan and closed with
it; ``POST /ask`` runs retriever | prompt | llm. ``/ask`` is an ``async def`` route (the pool is
async all the way down: no thread per request); ``/ask-sync`` is the same chain behind a plain
``def`` route (FastAPI runs it in its threadpool; the pool's sync path runs it on one shared
loop). ``/metrics`` is the pool's Prometheus text. Concurrent users' query embeddings share
requests (embedding coalescing), so the embedding rate is bound by tokens, not requests.

Runs against the embedded simulator unless OPENAI_API_KEY is set:

    .venv/bin/python examples/fastapi_rag.py            # serves on 127.0.0.1:8000
    curl -s localhost:8000/ask -H 'content-type: application/json' -d '{"question": "pooling?"}'

Under uvicorn with several workers, each worker process has its own pool; set
``performance.rate_limiting.backend: redis`` for one quota across them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnablePassthrough
from pydantic import BaseModel

from rat_langchain import ClientPool, FaissStore, RatConfig

CORPUS = Path(__file__).parent / "corpus"
PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answer from this context only:\n{context}"), ("user", "{question}")]
)


class Question(BaseModel):
    question: str


class Answer(BaseModel):
    answer: str


def build_chain(pool: ClientPool, store: FaissStore) -> Runnable[Any, str]:
    retriever = store.as_retriever(search_kwargs={"k": 3})

    def context(docs: list[Any]) -> str:
        return "\n\n".join(doc.page_content for doc in docs)

    return (
        {"context": retriever | context, "question": RunnablePassthrough()}
        | PROMPT
        | pool.chat_model(model="gpt-4o-mini", max_tokens=200)
        | StrOutputParser()
    )


def create_app(config: RatConfig) -> FastAPI:
    """The service on ``config``'s endpoint (a function, so tests and benchmarks make one)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with ClientPool(config) as pool:  # one pool per process, closed at shutdown
            embeddings = pool.embeddings("text-embedding-3-small")
            texts = [p.read_text() for p in sorted(CORPUS.glob("*.md"))]
            store = await FaissStore.afrom_texts(texts, embeddings)  # or FaissStore.load(...)
            app.state.pool = pool
            app.state.chain = build_chain(pool, store)
            yield

    app = FastAPI(title="rat_langchain RAG", lifespan=lifespan)

    @app.post("/ask")
    async def ask(question: Question, request: Request) -> Answer:
        return Answer(answer=await request.app.state.chain.ainvoke(question.question))

    @app.post("/ask-sync")
    def ask_sync(question: Question, request: Request) -> Answer:
        return Answer(answer=request.app.state.chain.invoke(question.question))

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> str:
        return str(request.app.state.pool.metrics.to_prometheus())

    return app


@contextlib.contextmanager
def _endpoint() -> Iterator[dict[str, str]]:
    from rat_langchain.sim import endpoint_or_simulator

    with endpoint_or_simulator(latency_ms=50) as endpoint:
        yield endpoint


def main() -> None:
    import uvicorn

    with _endpoint() as endpoint:
        app = create_app(RatConfig.load().with_endpoint(**endpoint))
        uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()
