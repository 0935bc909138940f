"""FaissStore: the langchain-tests standard suite, persistence, and the simulator's embeddings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from rat_langchain import ClientPool, RatConfig
from rat_langchain.index.faiss_store import FaissStore, IndexLoadError
from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY


class TestStandardFaissStore(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> FaissStore:  # type: ignore[override]
        return FaissStore(self.get_embeddings())


def _store(metric: str = "cosine") -> FaissStore:
    return FaissStore(VectorStoreIntegrationTests.get_embeddings(), metric=metric)  # type: ignore[arg-type]


def test_upsert_keeps_one_vector_per_id_and_bad_input_changes_nothing() -> None:
    store = _store()
    store.add_texts(["a", "b"], ids=["1", "2"])
    store.add_texts(["a2"], ids=["1"])
    assert len(store) == 2
    assert store._index.ntotal == 2
    with pytest.raises(ValueError, match="appears twice"):
        store.add_texts(["x", "y"], ids=["9", "9"])
    with pytest.raises(ValueError, match="2 texts but 1 metadatas"):
        store.add_texts(["x", "y"], metadatas=[{}], ids=["7", "8"])
    assert len(store) == 2
    assert store._index.ntotal == 2
    assert store.get_by_ids(["1"])[0].page_content == "a2"


def test_l2_metric_and_filter_and_mmr() -> None:
    store = _store("l2")
    store.add_texts(["x", "y", "z"], metadatas=[{"k": 1}, {"k": 2}, {"k": 1}], ids=["x", "y", "z"])
    hits = store.similarity_search_with_score("x", k=3)
    assert hits[0][0].id == "x"
    assert hits[0][1] == pytest.approx(0.0, abs=1e-5)  # an L2 distance: 0 for itself
    assert [d.id for d in store.similarity_search("x", k=3, filter={"k": 1})] == ["x", "z"]
    assert len(store.max_marginal_relevance_search("x", k=2, fetch_k=3)) == 2
    with pytest.raises(ValueError, match="metric"):
        FaissStore(store.embedding, metric="dot")  # type: ignore[arg-type]


def test_save_load_roundtrip_and_corruption_is_detected(tmp_path: Path) -> None:
    store = _store()
    store.add_texts(
        ["alpha", "beta", "gamma"], metadatas=[{"n": 1}, {"n": 2}, {"n": 3}], ids=["a", "b", "c"]
    )
    store.delete(["b"])
    target = tmp_path / "idx"
    store.save(target)
    loaded = FaissStore.load(target, store.embedding)
    assert len(loaded) == 2
    assert loaded.similarity_search("alpha", k=1)[0] == Document(
        id="a", page_content="alpha", metadata={"n": 1}
    )
    loaded.add_texts(["delta"], ids=["d"])  # keys continue, no collision with saved ones
    assert {d.id for d in loaded.similarity_search("delta", k=3)} == {"a", "c", "d"}
    store.save(target)  # overwrite in place
    assert len(FaissStore.load(target, store.embedding)) == 2
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp folders left

    data = (target / "index.faiss").read_bytes()
    (target / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexLoadError, match="truncated"):
        FaissStore.load(target, store.embedding)
    store.save(target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["count"] = 5
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match="manifest"):
        FaissStore.load(target, store.embedding)
    with pytest.raises(IndexLoadError, match="missing"):
        FaissStore.load(tmp_path / "nowhere", store.embedding)
    assert b"pickle" not in (target / "docstore.json").read_bytes()


def test_a_save_interrupted_between_its_renames_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store()
    store.add_texts(["alpha", "beta"], ids=["a", "b"])
    target = tmp_path / "idx"
    store.save(target)
    store.add_texts(["gamma"], ids=["c"])
    real_rename = Path.rename

    def crash_on_swap_in(self: Path, dest: Path) -> Path:
        if Path(dest) == target and self.name.startswith(".idx."):  # the new version's rename
            raise KeyboardInterrupt("killed between the two renames")
        return real_rename(self, dest)

    monkeypatch.setattr(Path, "rename", crash_on_swap_in)
    with pytest.raises(KeyboardInterrupt):
        store.save(target)
    monkeypatch.undo()
    assert not target.exists()  # the old version was moved aside, the new one never landed
    loaded = FaissStore.load(target, store.embedding)  # the previous version is read
    assert sorted(d.id or "" for d in loaded.get_by_ids(["a", "b", "c"])) == ["a", "b"]
    store.save(target)  # the next save puts things right
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    assert len(FaissStore.load(target, store.embedding)) == 3


def test_afrom_texts_with_the_pooled_embeddings(sim: SimulatorThread) -> None:
    pool = ClientPool(
        RatConfig.from_dict({"performance": {"rate_limiting": {"enabled": False}}}, env={})
    )
    emb = pool.embeddings(base_url=sim.base_url, api_key=API_KEY)
    texts = [f"note {i} about {'cats' if i % 2 else 'dogs'} and more" for i in range(500)]

    async def main() -> None:
        store = await FaissStore.afrom_texts(texts, emb, ids=[str(i) for i in range(500)])
        assert len(store) == 500
        assert store._index.ntotal == 500
        hits = await store.asimilarity_search("note 7 about cats and more", k=3)
        assert hits[0].id == "7"
        await pool.aclose()

    asyncio.run(main())
    assert sim.stats().count("embeddings") == 5 + 1  # 500 texts in batches of 100, one query


def test_another_embedding_model_is_named_not_a_bare_assertion(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    """An index built with one model, searched with another: a bare ``AssertionError`` from
    FAISS (``assert d == self.d``) when the sizes differed, nonsense when they did not. The
    manifest now records the model: loading with another is an ``IndexLoadError`` naming
    both, and a query of the wrong size a ``ValueError`` naming both sizes."""
    pool = ClientPool(
        RatConfig.from_dict({"performance": {"rate_limiting": {"enabled": False}}}, env={})
    )
    small = pool.embeddings("text-embedding-3-small", base_url=sim.base_url, api_key=API_KEY)
    large = pool.embeddings("text-embedding-3-large", base_url=sim.base_url, api_key=API_KEY)
    store = FaissStore.from_texts(["a note about cats", "one about dogs"], small)
    store.save(tmp_path / "idx")
    with pytest.raises(IndexLoadError, match=r"text-embedding-3-small.*text-embedding-3-large"):
        FaissStore.load(tmp_path / "idx", large)
    assert len(FaissStore.load(tmp_path / "idx", small)) == 2
    store.embedding = large  # swapped by hand: the sizes differ (1536 against 3072)
    with pytest.raises(ValueError, match="3072 dimensions, the index 1536"):
        store.similarity_search("cats")
    pool.close()
