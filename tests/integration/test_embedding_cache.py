"""The on-disk embedding cache: re-indexing unchanged documents sends no request."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
from langchain_core.documents import Document

from rat_langchain import BatchIndexer, ClientPool, EmbeddingCache
from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY, pool_config


def corpus(n: int = 60) -> list[Document]:
    return [
        Document(page_content=f"document {i} about topic {i % 7}", metadata={"n": i})
        for i in range(n)
    ]


async def test_reindexing_an_unchanged_corpus_sends_no_embedding_request(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    cache_path = tmp_path / "cache" / "emb.sqlite3"
    config = pool_config(
        performance={"caching": {"embeddings": True, "embedding_cache_path": str(cache_path)}}
    )
    async with ClientPool(config) as pool:
        emb = pool.embeddings(base_url=sim.base_url, api_key=API_KEY, batch_size=16)
        first = await BatchIndexer(emb, out=tmp_path / "a", progress=False).aindex(corpus())
        assert first.added == 60
        assert sim.stats().count("embeddings") == 4  # 60 texts, 16 per request
        sim.reset_stats()
        again = await BatchIndexer(emb, out=tmp_path / "b", progress=False).aindex(corpus())
        assert again.added == 60
        assert sim.stats().count("embeddings") == 0  # every vector came from the cache
        assert emb.cache is not None
        assert emb.cache.hits == 60
        changed = corpus()
        changed[5] = Document(page_content="a new text", metadata={"n": 5})
        sim.reset_stats()
        await BatchIndexer(emb, out=tmp_path / "c", progress=False).aindex(changed)
        assert sim.stats().count("embeddings") == 1
        assert sim.stats().embedding_inputs == 1  # only the changed text was sent
        # cached and fresh vectors are the same vectors
        fresh = pool.embeddings(base_url=sim.base_url, api_key=API_KEY, cache=None)
        cached = await emb.aembed_array(["document 3 about topic 3"])
        direct = await fresh.aembed_array(["document 3 about topic 3"])
        np.testing.assert_array_equal(cached, direct)


def test_corrupt_rows_and_settings_are_misses(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite3")
    vector = np.ones(8, dtype=np.float32) / np.sqrt(8)
    cache.put_many("m", None, {"a": vector, "b": vector})
    assert set(cache.get_many("m", None, ["a", "b", "c"])) == {"a", "b"}
    assert cache.get_many("m", 256, ["a"]) == {}  # other dimensions: another key
    assert cache.get_many("other-model", None, ["a"]) == {}
    with sqlite3.connect(tmp_path / "c.sqlite3") as db:  # damage one row on disk
        db.execute(
            "UPDATE vectors SET vec = ? WHERE key = ?", (b"\x00\x01", cache.key("m", None, "b"))
        )
    assert set(cache.get_many("m", None, ["a", "b"])) == {"a"}
    assert cache.corrupt == 1
    assert cache.stats()["hits"] == 3
    assert len(cache) == 2
    cache.close()
