"""Index a folder of .txt/.md files into FAISS, resumably, then search it.

Runs against the embedded simulator unless OPENAI_API_KEY is set (then OPENAI_BASE_URL, if set,
or api.openai.com). Kill it half-way and run it again: it resumes from its checkpoint and ends
with every chunk exactly once.

    .venv/bin/python examples/index_folder.py [FOLDER] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from pathlib import Path

from rat_langchain import BatchIndexer, ClientPool, RatConfig, load_folder
from rat_langchain.sim import endpoint_or_simulator

HERE = Path(__file__).parent


async def index_and_search(pool: ClientPool, folder: Path, out: Path, query: str) -> None:
    embeddings = pool.embeddings(model="text-embedding-3-small")  # batched, concurrent, checked
    indexer = BatchIndexer(embeddings, out=out)  # resumes if `out` holds a checkpoint
    report = await indexer.aindex(load_folder(folder))
    print(
        f"{report.added} chunks added, {report.skipped} already there, "
        f"{len(report.failed)} failed, in {report.seconds:.2f} s -> {out}"
    )
    for doc, score in await indexer.store.asimilarity_search_with_score(query, k=3):
        print(f"  {score:.3f}  {doc.metadata['source']}: {doc.page_content[:60]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(HERE / "corpus"))
    parser.add_argument("--out", help="index folder (default: a temporary one)")
    parser.add_argument("--query", default="What happens when an endpoint is down?")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(endpoint_or_simulator(latency_ms=50))
        config = RatConfig.load().with_endpoint(**endpoint)
        out = Path(args.out or stack.enter_context(tempfile.TemporaryDirectory())) / "index"
        pool = ClientPool(config)
        asyncio.run(index_and_search(pool, Path(args.folder), out, args.query))


if __name__ == "__main__":
    main()
