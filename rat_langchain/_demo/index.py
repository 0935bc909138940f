"""The demo's indexing step: index examples/corpus through the simulator, then answer from it."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from rat_langchain.config import RatConfig
from rat_langchain.index.indexer import BatchIndexer, load_folder
from rat_langchain.pool.pool import ClientPool
from rat_langchain.sim import SimulatorProcess

KEY = "sk-demo-simulated"
CORPUS = Path("examples/corpus")
QUESTION = "What happens to calls when an endpoint is down?"
PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answer from this context:\n{context}"), ("user", "{question}")]
)


def index_part(sim: SimulatorProcess, model: str) -> None:
    if not CORPUS.is_dir():
        print(f"\nIndexing: skipped ({CORPUS} not found; run the demo from the project root)")
        return
    print(f"\nIndexing {CORPUS} through the simulator, then answering from the index:")
    sim.reset_stats()
    config = RatConfig.from_dict({"performance": {"rate_limiting": {"enabled": False}}}, env={})

    async def main() -> None:
        async with ClientPool(config) as pool:
            emb = pool.embeddings(base_url=sim.base_url, api_key=KEY)
            with tempfile.TemporaryDirectory() as tmp:
                indexer = BatchIndexer(emb, out=Path(tmp) / "index", checkpoint_every_s=60)
                report = await indexer.aindex(load_folder(CORPUS, chunk_size=400, chunk_overlap=0))
                hits = await indexer.store.asimilarity_search(QUESTION, k=2)
            requests = sim.stats().count("embeddings")
            print(
                f"  {report.added} chunks indexed in {report.seconds:.2f} s; "
                f"{requests} embedding requests in all (the query's included)"
            )
            print(f"  question: {QUESTION}")
            for hit in hits:
                print(f"  found in {hit.metadata['source']}: {hit.page_content[:70]!r}...")
            llm = pool.chat_model(model=model, base_url=sim.base_url, api_key=KEY)
            chain = PROMPT | llm | StrOutputParser()
            context = "\n\n".join(h.page_content for h in hits)
            answer = await chain.ainvoke({"context": context, "question": QUESTION})
            print(f"  answer (simulated model): {answer[:90]}...")

    asyncio.run(main())
