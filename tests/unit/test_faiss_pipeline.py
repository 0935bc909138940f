"""FaissStore adds are pipelined: chunk k goes into FAISS while chunk k+1 is being embedded."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from rat_langchain import FaissStore


class Fake(Embeddings):
    def __init__(self) -> None:
        self.calls = 0
        self.second_started = threading.Event()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError

    def embed_query(self, text: str) -> list[float]:
        return [1.0, 0.0, 0.0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if self.calls == 2:
            self.second_started.set()
        return [[1.0, float(len(t)), float(self.calls)] for t in texts]


async def test_inserting_a_chunk_overlaps_embedding_the_next() -> None:
    fake = Fake()
    store = FaissStore(fake, add_chunk_size=3)
    real_insert = store._insert
    first_insert_saw_overlap: list[bool] = []

    def insert(*args: Any) -> list[str]:
        if not first_insert_saw_overlap:  # the first chunk's insert waits for the 2nd embed
            first_insert_saw_overlap.append(fake.second_started.wait(timeout=5))
        return real_insert(*args)

    store._insert = insert  # type: ignore[method-assign]
    async with asyncio.timeout(10):
        ids = await store.aadd_texts([f"t{i}" for i in range(8)], ids=[f"d{i}" for i in range(8)])
    assert first_insert_saw_overlap == [True]
    assert fake.calls == 3  # 8 texts in chunks of 3
    assert ids == [f"d{i}" for i in range(8)]
    assert len(store) == 8
    assert "d7" in store
    assert "nope" not in store
    again = await store.aadd_texts(["t0 changed"], ids=["d0"])  # an upsert, not a duplicate
    assert again == ["d0"]
    assert len(store) == 8
    assert store.get_by_ids(["d0"])[0].page_content == "t0 changed"
    assert np.isfinite(store._index.reconstruct(store._keys["d0"])).all()
    with pytest.raises(ValueError, match="add_chunk_size"):
        FaissStore(fake, add_chunk_size=0)


async def test_a_rejected_input_is_named_by_its_index_in_the_whole_call() -> None:
    from rat_langchain import EmbeddingInputError

    class Picky(Fake):
        async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
            if "bad" in texts:
                at = texts.index("bad")
                vectors = [None if i == at else [1.0, 2.0, 3.0] for i in range(len(texts))]
                raise EmbeddingInputError({at: "HTTP 400: rejected"}, vectors)
            return await super().aembed_documents(texts)

    store = FaissStore(Picky(), add_chunk_size=3)
    texts = ["a", "b", "c", "d", "bad", "f"]
    with pytest.raises(EmbeddingInputError) as caught:
        await store.aadd_texts(texts, ids=[f"d{i}" for i in range(6)])
    assert caught.value.failed == {4: "HTTP 400: rejected"}  # not 1, its index in its chunk
    assert "d0" in store  # the first chunk was added; retrying the rest is safe (upserts)
    assert "d3" not in store
