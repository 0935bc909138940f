"""FaissStore: a LangChain ``VectorStore`` over faiss-cpu that never loses or duplicates a document.

Why not langchain-community's FAISS: it adds vectors before checking ids (a duplicate id leaves an
orphan vector), has no upsert, fails on deleting missing ids, runs FAISS work on the event loop,
and pickles its docstore (loading needs ``allow_dangerous_deserialization=True``). Here ids are
stable int64 keys in an ``IndexIDMap2``; adding an existing id replaces it; inputs are validated
before anything changes; async FAISS work runs off the event loop; ``save`` writes the index, a
JSON docstore and a manifest atomically, and ``load`` checks them all (no pickle anywhere).

Size: ~600 lines because LangChain's ``VectorStore`` interface is wide (add, upsert, delete,
get, four searches, each sync and async) and all of it keeps one invariant over one index and
one docstore; the loading of untrusted folders is the module's tail (``_read_index``,
``_restore_documents``), using the checks in ``index/_files.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Self

import faiss
import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from rat_langchain.errors import EmbeddingInputError, IndexLoadError, shorten
from rat_langchain.index._atomic import atomic_dir
from rat_langchain.index._files import (
    checked_int,
    digest,
    open_folder,
    parse_json,
    read_bytes,
    read_json,
    require,
)

__all__ = ["FaissStore", "IndexLoadError"]

FORMAT_VERSION = 1
Metric = Literal["cosine", "l2"]


class FaissStore(VectorStore):
    """FAISS vector store with stable ids, upserts and safe persistence.

    Example::

        store = await FaissStore.afrom_texts(texts, pool.embeddings(), ids=ids)
        docs = await store.asimilarity_search("query", k=4)
        store.save("index/")
        store = FaissStore.load("index/", pool.embeddings())
    """

    def __init__(
        self, embedding: Embeddings, *, metric: Metric = "cosine", add_chunk_size: int = 8192
    ) -> None:
        if metric not in ("cosine", "l2"):
            raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")
        if add_chunk_size < 1:
            raise ValueError(f"add_chunk_size must be >= 1, got {add_chunk_size}")
        self.add_chunk_size = add_chunk_size
        self.embedding = embedding
        self.metric: Metric = metric
        # Any: faiss's stubs describe the SWIG layer, not the numpy-friendly methods it patches in
        self._index: Any = None
        self._docs: dict[str, Document] = {}
        self._keys: dict[str, int] = {}  # document id -> int64 FAISS id
        self._ids: dict[int, str] = {}
        self._next_key = 0
        # keys of replaced or deleted vectors still in the index (searches skip them): removed
        # in one pass once they are an eighth of it (``_compact``). Why: FAISS's remove_ids is
        # a pass over the whole flat index, 50 ms an upsert at 10^5 users' memories in one store
        self._dead: list[int] = []
        # the embedding model the vectors were made with (saved in the manifest): searching
        # with another model's vectors returns nonsense, or a bare AssertionError from FAISS
        self.embedding_model: str | None = _model_of(embedding)
        self._lock = threading.Lock()  # one writer or reader of the FAISS index at a time

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    @property
    def dimension(self) -> int | None:
        return None if self._index is None else int(self._index.d)

    def __len__(self) -> int:
        return len(self._docs)

    def _mismatch(self, what: str, size: int) -> str:
        """Why vectors of ``size`` do not fit: the sizes, and the models where known."""
        built = f" (made with {self.embedding_model})" if self.embedding_model else ""
        now = _model_of(self.embedding)
        using = f"; this store embeds with {now}" if now else ""
        return (
            f"{what} has {size} dimensions, the index {self._index.d}{built}{using}: search "
            "and add with the embedding model the index was built with"
        )

    def __contains__(self, doc_id: object) -> bool:
        """Whether a document with this id is in the store (e.g. to skip it when resuming)."""
        return doc_id in self._docs

    @property
    def ids(self) -> list[str]:
        """Every document id in the store, in the order they were first added."""
        return list(self._keys)

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of ``ids`` (normalised, for cosine), one row each; ids that are
        not in the store are left out."""
        with self._lock:
            keys = [self._keys[i] for i in ids if i in self._keys]
            if not keys or self._index is None:
                return np.zeros((0, self.dimension or 0), dtype=np.float32)
            return np.asarray(self._index.reconstruct_batch(np.asarray(keys, dtype=np.int64)))

    def add_vectors(
        self,
        texts: list[str],
        vectors: np.ndarray,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
    ) -> list[str]:
        """Add documents whose vectors are already made (checked as embedded ones are:
        their count, size and finiteness); the same id replaces its document."""
        texts, metadatas, ids = self._prepare(texts, metadatas, ids)
        return self._insert(texts, metadatas, ids, vectors)

    def search_among(
        self, vector: Sequence[float] | np.ndarray, ids: Sequence[str], k: int = 4
    ) -> list[tuple[Document, float]]:
        """The ``k`` nearest of the documents ``ids`` only, scored as ``_search`` does. Exact,
        and its cost is that of ``ids``, not of the store: the nearest of one user's
        memories in a store holding everyone's (``MemoryStore``), where a filter on the whole
        index would scan every vector, or miss the user's past ``fetch_k``."""
        if k <= 0 or self._index is None:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self._index.d:
            raise ValueError(self._mismatch("the query vector", query.shape[1]))
        present = [i for i in ids if i in self._keys]
        rows = self.vectors(present)
        if not len(rows):
            return []
        if self.metric == "cosine":
            faiss.normalize_L2(query)
            scores = rows @ query[0]
            order = np.argsort(-scores, kind="stable")[:k]
        else:
            scores = ((rows - query[0]) ** 2).sum(axis=1)  # squared, as IndexFlatL2's
            order = np.argsort(scores, kind="stable")[:k]
        out = []
        for i in order:
            doc_id = present[int(i)]
            doc = self._docs[doc_id]
            found = Document(id=doc_id, page_content=doc.page_content, metadata=doc.metadata)
            out.append((found, float(scores[int(i)])))
        return out

    # -- adding ----------------------------------------------------------------------------------

    @staticmethod
    def _prepare(
        texts: Iterable[str], metadatas: list[dict[str, Any]] | None, ids: list[str] | None
    ) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        texts = list(texts)
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        if len(metadatas) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(metadatas)} metadatas")
        ids = [str(i) if i is not None else str(uuid.uuid4()) for i in ids] if ids else None
        ids = ids or [str(uuid.uuid4()) for _ in texts]
        if len(ids) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(ids)} ids")
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                raise ValueError(f"id {i!r} appears twice in one add; ids must be unique")
            seen.add(i)
        return texts, metadatas, ids

    def _insert(
        self, texts: list[str], metadatas: list[dict[str, Any]], ids: list[str], vectors: np.ndarray
    ) -> list[str]:
        """Check everything first, then replace existing ids and add the rest in one bulk call."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(f"expected {len(texts)} vectors, the embeddings gave {vectors.shape}")
        if not np.all(np.isfinite(vectors)):
            raise ValueError("the embeddings returned NaN or infinite values")
        if self.metric == "cosine":
            vectors = vectors.copy()
            faiss.normalize_L2(vectors)
        with self._lock:
            if self._index is None:
                base = (
                    faiss.IndexFlatIP(vectors.shape[1])
                    if self.metric == "cosine"
                    else faiss.IndexFlatL2(vectors.shape[1])
                )
                self._index = faiss.IndexIDMap2(base)
            if vectors.shape[1] != self._index.d:
                raise ValueError(self._mismatch("vectors", vectors.shape[1]))
            replaced = [self._keys[i] for i in ids if i in self._keys]
            for key in replaced:  # a new key for the new vector; the old one is dead
                del self._ids[key]
            self._dead.extend(replaced)
            keys = list(range(self._next_key, self._next_key + len(ids)))
            self._next_key += len(ids)
            self._index.add_with_ids(vectors, np.asarray(keys, dtype=np.int64))
            self._compact(force=False)
            for doc_id, key, text, metadata in zip(ids, keys, texts, metadatas, strict=True):
                self._keys[doc_id] = key
                self._ids[key] = doc_id
                self._docs[doc_id] = Document(page_content=text, metadata=dict(metadata))
        return ids

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        texts, metadatas, ids = self._prepare(texts, metadatas, ids)
        if not texts:
            return []
        vectors = np.asarray(self.embedding.embed_documents(texts), dtype=np.float32)
        return self._insert(texts, metadatas, ids, vectors)

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        texts, metadatas, ids = self._prepare(texts, metadatas, ids)
        if not texts:
            return []
        # Pipelined: chunk k goes into FAISS (off the loop, one bulk add) while chunk k+1 is
        # being embedded. Chunks are large (8192 texts: ~80 requests at the default batch size)
        # so that the embedder's concurrency is not cut short at every chunk boundary (with
        # 1024-text chunks the indexing benchmark lost 27 % of its throughput). Adds are upserts
        # by id, so if a later chunk fails, retrying the call is safe: the chunks already added
        # are replaced, not duplicated.
        size = self.add_chunk_size
        inserting: asyncio.Task[list[str]] | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                for start in range(0, len(texts), size):
                    part = slice(start, start + size)
                    try:
                        vectors = await self._embed_part(texts, start, size)
                    finally:  # the chunk before lands either way: a retry need not redo it
                        if inserting is not None:
                            await inserting
                    inserting = tg.create_task(
                        asyncio.to_thread(
                            self._insert, texts[part], metadatas[part], ids[part], vectors
                        )
                    )
        except ExceptionGroup as group:  # one failure: raise it as itself
            raise (group.exceptions[0] if len(group.exceptions) == 1 else group) from None
        return ids

    async def _embed_part(self, texts: list[str], start: int, size: int) -> np.ndarray:
        """Embed ``texts[start:start+size]``; an EmbeddingInputError names inputs by their index
        in the whole call (none of this chunk was added; earlier chunks were)."""
        try:
            return await self._embed(texts[start : start + size])
        except EmbeddingInputError as exc:
            if start == 0 and len(texts) <= size:
                raise
            failed = {start + i: reason for i, reason in exc.failed.items()}
            vectors: list[list[float] | None] = [None] * len(texts)
            vectors[start : start + len(exc.vectors)] = exc.vectors
            raise EmbeddingInputError(failed, vectors) from exc

    async def _embed(self, texts: list[str]) -> np.ndarray:
        aembed_array = getattr(self.embedding, "aembed_array", None)
        if aembed_array is not None:  # ours: straight to float32, no Python float lists
            return np.asarray(await aembed_array(texts), dtype=np.float32)
        return np.asarray(await self.embedding.aembed_documents(texts), dtype=np.float32)

    # -- reading ---------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        out = []
        for doc_id in ids:
            doc = self._docs.get(doc_id)
            if doc is not None:
                out.append(
                    Document(id=doc_id, page_content=doc.page_content, metadata=doc.metadata)
                )
        return out

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return self.get_by_ids(ids)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete by id; ids that are not there are ignored. All of them in one FAISS call."""
        if ids is None:
            raise ValueError("delete needs the ids to remove")
        with self._lock:
            keys = [self._keys.pop(i) for i in ids if i in self._keys]
            for key in keys:
                self._docs.pop(self._ids.pop(key), None)
            self._dead.extend(keys)
            self._compact(force=False)
        return True

    def _compact(self, *, force: bool) -> None:
        """Remove the dead vectors from the index, in one pass, once they are an eighth of it
        (or ``force``: before a save, which writes only live ones). Lock held."""
        if not self._dead or self._index is None:
            return
        if force or len(self._dead) * 8 >= self._index.ntotal:
            self._index.remove_ids(np.asarray(self._dead, dtype=np.int64))
            self._dead = []

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        return await asyncio.to_thread(self.delete, ids)

    def _search(
        self,
        vector: Sequence[float] | np.ndarray,
        k: int,
        filter: dict[str, Any] | None,
        fetch_k: int,
    ) -> list[tuple[Document, float]]:
        if self._index is None or self._index.ntotal == 0 or k <= 0:
            return []
        query = np.asarray([vector], dtype=np.float32)
        if query.ndim != 2 or query.shape[1] != self._index.d:
            raise ValueError(self._mismatch("the query vector", query.shape[-1]))
        if self.metric == "cosine":
            faiss.normalize_L2(query)
        wanted = min(self._index.ntotal, (fetch_k if filter else k) + len(self._dead))
        with self._lock:
            scores, keys = self._index.search(query, wanted)
        results = []
        for score, key in zip(scores[0], keys[0], strict=True):
            doc_id = self._ids.get(int(key))
            if key < 0 or doc_id is None:
                continue
            doc = self._docs[doc_id]
            if filter and any(doc.metadata.get(f) != v for f, v in filter.items()):
                continue
            found = Document(id=doc_id, page_content=doc.page_content, metadata=doc.metadata)
            results.append((found, float(score)))
            if len(results) == k:
                break
        return results

    def similarity_search_with_score_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        fetch_k: int = 20,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Score: cosine similarity (higher is closer) or L2 distance (lower is closer)."""
        return self._search(embedding, k, filter, max(fetch_k, k))

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        return self.similarity_search_with_score_by_vector(
            self.embedding.embed_query(query), k, **kwargs
        )

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, **kwargs)]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, **kwargs)]

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        vector = await self.embedding.aembed_query(query)
        return await asyncio.to_thread(
            self.similarity_search_with_score_by_vector, vector, k, **kwargs
        )

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        pairs = await asyncio.to_thread(
            self.similarity_search_with_score_by_vector, embedding, k, **kwargs
        )
        return [d for d, _ in pairs]

    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self.metric == "cosine":
            return lambda similarity: (1.0 + similarity) / 2.0
        return self._euclidean_relevance_score_fn

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        candidates = self._search(embedding, max(fetch_k, k), filter, max(fetch_k, k) * 4)
        if not candidates:
            return []
        assert self._index is not None
        with self._lock:
            vectors = np.stack(
                [self._index.reconstruct(self._keys[str(d.id)]) for d, _ in candidates]
            )
        chosen = maximal_marginal_relevance(
            np.asarray(embedding, dtype=np.float32), list(vectors), lambda_mult=lambda_mult, k=k
        )
        return [candidates[i][0] for i in chosen]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        vector = self.embedding.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(
            vector, k, fetch_k, lambda_mult, **kwargs
        )

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        vector = await self.embedding.aembed_query(query)
        return await asyncio.to_thread(
            self.max_marginal_relevance_search_by_vector, vector, k, fetch_k, lambda_mult, **kwargs
        )

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        metric: Metric = "cosine",
        **kwargs: Any,
    ) -> Self:
        store = cls(embedding, metric=metric)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        metric: Metric = "cosine",
        **kwargs: Any,
    ) -> Self:
        store = cls(embedding, metric=metric)
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store

    # -- persistence -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``index.faiss``, ``docstore.json`` and ``manifest.json`` into ``path``, atomically:
        everything goes to a temporary folder beside it, which then replaces ``path``."""
        target = Path(path)
        with self._lock:
            self._compact(force=True)
            docs = {
                doc_id: {
                    "page_content": doc.page_content,
                    "metadata": doc.metadata,
                    "key": self._keys[doc_id],
                }
                for doc_id, doc in self._docs.items()
            }
            index_bytes = (
                faiss.serialize_index(self._index).tobytes() if self._index is not None else b""
            )
            manifest = {
                "format": "rat_langchain.FaissStore",
                "version": FORMAT_VERSION,
                "metric": self.metric,
                "dimension": self.dimension,
                "embedding_model": self.embedding_model,
                "count": len(docs),
                "next_key": self._next_key,
                "index_bytes": len(index_bytes),
            }
        try:
            docstore = json.dumps(docs, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata must be JSON-serialisable to save: {exc}") from exc
        manifest["sha256"] = {"index.faiss": digest(index_bytes), "docstore.json": digest(docstore)}
        with atomic_dir(target) as tmp:
            (tmp / "index.faiss").write_bytes(index_bytes)
            (tmp / "docstore.json").write_bytes(docstore)
            (tmp / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str], embedding: Embeddings) -> Self:
        """Read what ``save`` wrote, checking every part; raise :class:`IndexLoadError`, naming
        the file and the problem, for anything else.

        A saved folder is untrusted (docs/security.md): only regular files inside it are read,
        each checked against the manifest's checksum; every size FAISS would allocate is checked
        against the file's length first; ids must be unique and agree between the index and the
        docstore, ``next_key`` must lie above every key, and every vector must be finite.
        """
        folder = open_folder(path, "FaissStore")
        where = folder / "manifest.json"
        manifest = read_json(folder, "manifest.json", max_bytes=_MAX_MANIFEST_BYTES)
        require(
            isinstance(manifest, dict) and manifest.get("format") == "rat_langchain.FaissStore",
            where,
            "not a FaissStore manifest",
        )
        require(
            manifest.get("version") == FORMAT_VERSION,
            where,
            f"saved in format {shorten(manifest.get('version'), 20)}, this version reads "
            f"{FORMAT_VERSION}",
        )
        metric = manifest.get("metric")
        require(metric in ("cosine", "l2"), where, f"unknown metric {shorten(metric, 40)}")
        count = checked_int(manifest.get("count"), where, "count")
        next_key = checked_int(manifest.get("next_key"), where, "next_key")
        size = checked_int(manifest.get("index_bytes"), where, "index_bytes")
        sums = manifest.get("sha256", {})  # stores saved before checksums have none
        require(
            isinstance(sums, dict) and all(isinstance(v, str) for v in sums.values()),
            where,
            "sha256 must map file names to checksums",
        )
        index_path = folder / "index.faiss"
        index_bytes = read_bytes(folder, "index.faiss", max_bytes=max(size, 1))
        require(
            len(index_bytes) == size,
            index_path,
            f"{len(index_bytes)} bytes, the manifest says {size}: "
            "the file is truncated or replaced",
        )
        docstore = read_bytes(folder, "docstore.json")
        for name, data in (("index.faiss", index_bytes), ("docstore.json", docstore)):
            expected = sums.get(name)
            require(
                expected is None or expected == digest(data),
                folder / name,
                "does not match its checksum in the manifest: damaged or replaced",
            )
        built_with = manifest.get("embedding_model")
        require(
            built_with is None or (isinstance(built_with, str) and len(built_with) <= 256),
            where,
            "embedding_model must be a model name",
        )
        given = _model_of(embedding)
        require(
            built_with is None or given is None or given == built_with,
            where,
            f"the index was built with {shorten(built_with, 80)} "
            f"({shorten(manifest.get('dimension'), 12)} dimensions); loading it with {given} "
            "would search with another model's vectors. Load it with the model it was built "
            "with, or build a new index",
        )
        store = cls(embedding, metric=metric)
        store.embedding_model = built_with or given
        if size:
            dimension = checked_int(
                manifest.get("dimension"), where, "dimension", low=1, high=2**16
            )
            store._index = _read_index(index_path, index_bytes, metric, dimension, count)
        else:
            require(count == 0, where, f"count is {count} but there is no index")
        docs = parse_json(docstore, folder / "docstore.json")
        _restore_documents(store, docs, folder / "docstore.json", count, next_key)
        store._next_key = next_key
        return store


_MAX_MANIFEST_BYTES = 64 * 1024


def _model_of(embedding: Embeddings) -> str | None:
    """The model name of an embeddings object (``model`` or ``model_name``), if it says."""
    for name in ("model", "model_name"):
        value = getattr(embedding, name, None)
        if isinstance(value, str) and value:
            dims = getattr(embedding, "dimensions", None)
            return f"{value}@{dims}" if isinstance(dims, int) else value
    return None


# FAISS's deserialisation byte limit is process-wide: one load sets it at a time.
_FAISS_LIMIT = threading.Lock()


def _read_index(path: Path, data: bytes, metric: str, dimension: int, count: int) -> Any:
    """The ``IndexIDMap2`` over a flat index that ``save`` wrote, from untrusted bytes.

    The file's length must be exactly what ``count`` vectors of ``dimension`` take, and FAISS
    may allocate no vector larger than the file, so a header declaring 2^30 elements fails
    before anything is allocated for it."""
    flat = faiss.IndexFlatIP if metric == "cosine" else faiss.IndexFlatL2
    header = len(faiss.serialize_index(faiss.IndexIDMap2(flat(dimension))))
    expected = header + count * (4 * dimension + 8)
    require(
        len(data) == expected,
        path,
        f"{len(data)} bytes where the manifest's {count} vectors of {dimension} dimensions take "
        f"{expected}: "
        "the file is truncated or replaced",
    )
    with _FAISS_LIMIT:
        before = faiss.get_deserialization_vector_byte_limit()
        faiss.set_deserialization_vector_byte_limit(len(data))
        try:
            index: Any = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise IndexLoadError(f"{path} cannot be read: {shorten(str(exc))}") from None
        finally:
            faiss.set_deserialization_vector_byte_limit(before)
    require(isinstance(index, faiss.IndexIDMap2), path, "not the index type a save writes")
    inner = faiss.downcast_index(index.index)
    want = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    require(
        isinstance(inner, faiss.IndexFlat) and inner.metric_type == want,
        path,
        f"not a flat {metric} index",
    )
    require(
        index.d == dimension and index.ntotal == count and inner.ntotal == count,
        path,
        f"holds {index.ntotal} vectors of {index.d} dimensions, the manifest says {count} of "
        f"{dimension}",
    )
    if count:
        vectors = inner.reconstruct_n(0, count)
        require(bool(np.isfinite(vectors).all()), path, "holds vectors that are not finite")
    return index


def _restore_documents(
    store: FaissStore, docs: object, path: Path, count: int, next_key: int
) -> None:
    """Fill ``store`` from the docstore, checking every field against the index."""
    require(isinstance(docs, dict), path, "not a mapping of ids to documents")
    assert isinstance(docs, dict)
    require(len(docs) == count, path, f"{len(docs)} documents, the manifest's count is {count}")
    keys: dict[int, str] = {}
    for doc_id, item in docs.items():
        require(
            isinstance(item, dict)
            and isinstance(item.get("page_content"), str)
            and isinstance(item.get("metadata"), dict),
            path,
            f"document {shorten(doc_id, 60)} is not page_content text with a metadata mapping",
        )
        key = checked_int(item.get("key"), path, f"the key of {shorten(doc_id, 60)}")
        require(key < next_key, path, f"key {key} is not below next_key {next_key}")
        require(key not in keys, path, f"key {key} is used by two documents")
        keys[key] = doc_id
    if store._index is not None:
        stored = faiss.vector_to_array(store._index.id_map)
        require(len(np.unique(stored)) == len(stored), path, "the index holds duplicate ids")
        require(
            set(stored.tolist()) == set(keys),
            path,
            "the index and the docstore hold different ids",
        )
    for key, doc_id in keys.items():
        item = docs[doc_id]
        store._docs[doc_id] = Document(page_content=item["page_content"], metadata=item["metadata"])
        store._keys[doc_id] = key
        store._ids[key] = doc_id
