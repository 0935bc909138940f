"""BatchIndexer into a real vector database server: Chroma (`chroma run`, from PyPI), started and
stopped here. Synchronous and Batch API paths; several indexer processes on one Redis quota
into one server collection, each document stored once and embedded once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.documents import Document

from rat_langchain import BatchIndexer, BatchSettings, ClientPool, RatConfig
from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY, RedisServer
from tests.support.chroma_server import ChromaServer

chromadb = pytest.importorskip("chromadb")  # `make test` installs it (the dev extra)
langchain_chroma = pytest.importorskip("langchain_chroma")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chroma() -> Iterator[ChromaServer]:
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")  # offline: no telemetry calls
    with ChromaServer() as server:
        yield server


def _store(server: ChromaServer, collection: str, embedding: object) -> object:
    client = chromadb.HttpClient(
        host=server.host,
        port=server.port,
        settings=chromadb.config.Settings(anonymized_telemetry=False),
    )
    return langchain_chroma.Chroma(collection, embedding_function=embedding, client=client)


def _count(server: ChromaServer, collection: str) -> int:
    client = chromadb.HttpClient(
        host=server.host,
        port=server.port,
        settings=chromadb.config.Settings(anonymized_telemetry=False),
    )
    return int(client.get_collection(collection).count())


def corpus(n: int) -> list[Document]:
    return [Document(page_content=f"chroma doc {i} about {i % 11}", id=f"c{i}") for i in range(n)]


@pytest.mark.parametrize("mode", ["online", "batch"])
async def test_into_a_chroma_server_exactly_once(
    chroma: ChromaServer, sim: SimulatorThread, tmp_path: Path, mode: str
) -> None:
    sim.configure(batch_completion_s=0.0)
    config = RatConfig.from_dict(
        {"endpoint": {"base_url": sim.base_url, "api_key": API_KEY}}, env={}
    )
    collection = f"test-{mode}"
    async with ClientPool(config) as pool:
        embeddings = pool.embeddings()
        store = _store(chroma, collection, embeddings)
        settings = BatchSettings(poll_s=0.01, max_poll_s=0.05)

        def indexer() -> BatchIndexer:
            return BatchIndexer(
                embeddings, store=store, out=tmp_path / "state", mode=mode,  # type: ignore[arg-type]
                batch=settings, progress=False,
            )  # fmt: skip

        report = await indexer().aindex(corpus(1000))
        assert report.added == 1000
        again = await indexer().aindex(corpus(1000))
        assert (again.added, again.skipped) == (0, 1000)
        hits = await store.asimilarity_search("chroma doc 7 about 7", k=1)  # type: ignore[attr-defined]
        assert hits[0].id == "c7"
    assert _count(chroma, collection) == 1000
    stats = sim.stats()
    embedded = stats.batch_inputs if mode == "batch" else stats.embedding_inputs
    assert embedded >= 1000


_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    import chromadb
    from langchain_chroma import Chroma
    from langchain_core.documents import Document
    from rat_langchain import BatchIndexer, ClientPool, RatConfig

    args = json.loads(sys.argv[1])

    async def main() -> None:
        config = RatConfig.from_dict(args["config"], env={})
        async with ClientPool(config) as pool:
            embeddings = pool.embeddings()
            client = chromadb.HttpClient(
                host=args["host"], port=args["port"],
                settings=chromadb.config.Settings(anonymized_telemetry=False),
            )
            store = Chroma(args["collection"], embedding_function=embeddings, client=client)
            docs = [
                Document(page_content=f"shared doc {i} about {i % 17}", id=f"s{i}")
                for i in range(args["docs"])
            ]
            shard = tuple(args["shard"]) if args["shard"] else None
            report = await BatchIndexer(
                embeddings, store=store, shard=shard, progress=False
            ).aindex(docs)
            print(json.dumps({"added": report.added, "skipped": report.skipped}))

    asyncio.run(main())
    """
)


def test_processes_on_one_redis_quota_index_one_corpus_into_one_server_store_once(
    chroma: ChromaServer, sim: SimulatorThread, redis_server: RedisServer, tmp_path: Path
) -> None:
    docs = 3000
    config = {
        "endpoint": {"base_url": sim.base_url, "api_key": API_KEY},
        "performance": {"rate_limiting": {"backend": "redis", "redis_url": redis_server.url}},
    }
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ANONYMIZED_TELEMETRY": "False"}

    def start(shard: list[int] | None) -> subprocess.Popen[str]:
        args = {
            "config": config,
            "host": chroma.host,
            "port": chroma.port,
            "collection": "shared",
            "docs": docs,
            "shard": shard,
        }
        return subprocess.Popen(
            [sys.executable, str(script), json.dumps(args)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    workers = [start([i, 3]) for i in range(3)]  # three processes, one corpus, disjoint shares
    reports = []
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(r["added"] for r in reports) == docs
    assert all(r["added"] > 0 for r in reports)  # each took a share
    assert _count(chroma, "shared") == docs  # each document stored once
    assert sim.stats().embedding_inputs == docs  # and embedded once, across the processes
    late = start(None)  # a whole-corpus run afterwards finds everything there
    out, _ = late.communicate(timeout=120)
    assert json.loads(out.strip().splitlines()[-1]) == {"added": 0, "skipped": docs}
    assert _count(chroma, "shared") == docs
