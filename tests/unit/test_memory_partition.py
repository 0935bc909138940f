"""MemoryStore at scale (issue 33, item 4): one FaissStore partitioned by user, not an index per
user. Every user's search sees only their memories, ids of different users never collide, and
a folder saved in the old format (a store per user) still loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from rat_langchain import FaissStore, MemoryStore
from rat_langchain.index.memory import _folder_name

EMBEDDING = DeterministicFakeEmbedding(size=16)


async def test_users_share_one_store_and_never_see_each_others_memories() -> None:
    memory = MemoryStore(EMBEDDING)
    await memory.add_memories_batch("ana", ["likes tea", "lives in Porto"], ids=["1", "2"])
    await memory.add_memories_batch("bo", ["likes tea", "lives in Oslo"], ids=["1", "2"])
    assert memory.count("ana") == memory.count("bo") == 2  # the same ids: no collision
    hits = await memory.search_memories("bo", "likes tea", k=5)
    assert [h.id for h in hits] == ["1", "2"]
    assert [h.page_content for h in hits] == ["likes tea", "lives in Oslo"]  # only bo's
    assert await memory.search_memories("cy", "likes tea") == []
    await memory.delete("ana", ["1"])
    assert [h.page_content for h in await memory.search_memories("ana", "x", k=5)] == [
        "lives in Porto"
    ]
    assert memory.count("bo") == 2
    await memory.delete("ana")
    assert memory.users == ["bo"]
    await memory.add_memories_batch("bo", ["lives in Bergen"], ids=["2"])  # an upsert
    assert memory.count("bo") == 2
    assert "lives in Bergen" in {h.page_content for h in await memory.search_memories("bo", "x")}


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_search_among_ranks_a_subset_as_the_whole_index_does(metric: str) -> None:
    store = FaissStore(EMBEDDING, metric=metric)  # type: ignore[arg-type]
    texts = [f"memory {i}" for i in range(50)]
    store.add_texts(texts, ids=[str(i) for i in range(50)])
    query = EMBEDDING.embed_query("memory 7")
    everything = store.similarity_search_with_score_by_vector(query, k=50)
    subset = [str(i) for i in range(0, 50, 3)]
    among = store.search_among(query, subset, k=5)
    expected = [(d.id, s) for d, s in everything if d.id in subset][:5]
    assert [d.id for d, _ in among] == [i for i, _ in expected]
    assert np.allclose([s for _, s in among], [s for _, s in expected], atol=1e-4)
    assert store.search_among(query, ["nope"], k=3) == []


async def test_a_folder_saved_with_a_store_per_user_still_loads(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    (folder / "users").mkdir(parents=True)
    users = {}
    for user, texts in (("ana", ["likes tea", "lives in Porto"]), ("bo", ["likes coffee"])):
        store = FaissStore(EMBEDDING)
        store.add_texts(texts, ids=[f"{user}-{i}" for i in range(len(texts))])
        store.save(folder / "users" / _folder_name(user))
        users[user] = _folder_name(user)
    manifest = {"format": "rat_langchain.MemoryStore", "version": 1, "metric": "cosine"}
    (folder / "memory.json").write_text(json.dumps({**manifest, "users": users}))
    memory = MemoryStore.load(folder, EMBEDDING)
    assert memory.users == ["ana", "bo"]
    hits = await memory.search_memories("ana", "likes tea", k=1)
    assert (hits[0].id, hits[0].page_content) == ("ana-0", "likes tea")
    memory.save(tmp_path / "new")  # written in this version's format: one store
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["memory.json", "store"]
    again = MemoryStore.load(tmp_path / "new", EMBEDDING)
    assert again.count("ana") == 2
    assert again.count("bo") == 1


def test_replaced_and_deleted_vectors_are_never_found_and_are_removed_in_one_pass(
    tmp_path: Path,
) -> None:
    """An upsert or a delete marks the old vector dead instead of a pass over the whole flat
    index each time (FAISS's remove_ids: 50 ms an upsert at 10^5 memories); searches skip
    the dead, which are removed together once they are an eighth of the index, and before a
    save."""
    store = FaissStore(EMBEDDING)
    store.add_texts([f"memory {i}" for i in range(80)], ids=[str(i) for i in range(80)])
    store.add_texts(["replaced"], ids=["7"])
    store.delete(["8"])
    hits = store.similarity_search("memory 7", k=80)
    assert len(hits) == 79
    assert "memory 7" not in {h.page_content for h in hits}
    assert "8" not in {h.id for h in hits}
    assert store.similarity_search("replaced", k=1)[0].id == "7"
    index: Any = store._index
    assert index.ntotal == 81  # two dead, not yet removed
    store.delete([str(i) for i in range(20, 30)])  # 12 dead of 81: past an eighth
    assert index.ntotal == 69
    store.delete(["40"])
    store.save(tmp_path / "s")  # a save removes the dead first
    assert index.ntotal == 68
    loaded = FaissStore.load(tmp_path / "s", EMBEDDING)
    assert len(loaded) == 68
    assert loaded.similarity_search("replaced", k=1)[0].id == "7"
