"""BatchIndexer: index a large corpus into a vector store so that a run killed half-way and
started again ends with every document exactly once.

How: every chunk gets a deterministic id (the document's own id, else a hash of its source,
position and text), adds are upserts, and the store itself is the checkpoint — saved atomically
every few batches. A restarted run loads it, skips the ids it already holds, and goes on. Documents
the server rejects for good are reported by id (and written to ``failed.json``), never dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_text_splitters import RecursiveCharacterTextSplitter
from pydantic import ValidationError

from rat_langchain._progress import SILENT, end, progress
from rat_langchain._tokens import encode
from rat_langchain.errors import EmbeddingInputError
from rat_langchain.index._atomic import readable_dir
from rat_langchain.index.batch_api import (
    BatchEmbeddings,
    BatchReport,
    BatchSettings,
    batch_embed,
    estimate_cost,
)
from rat_langchain.index.faiss_store import FaissStore

__all__ = ["AUTO_BATCH_TOKENS", "BatchIndexer", "IndexReport", "load_folder"]

_log = logging.getLogger("rat_langchain.index")

TEXT_SUFFIXES = (".txt", ".md")


def document_id(doc: Document, position: int) -> str:
    """The document's own id, else a stable hash of its source, position and text."""
    if doc.id:
        return str(doc.id)
    source = str(doc.metadata.get("source", ""))
    digest = hashlib.sha256(f"{source}\0{position}\0{doc.page_content}".encode()).hexdigest()
    return digest[:32]


def load_folder(
    path: str | os.PathLike[str], *, chunk_size: int = 1000, chunk_overlap: int = 100
) -> Iterator[Document]:
    """Chunks of every .txt/.md file under ``path``, in a stable order, with ``source`` and
    ``chunk`` metadata and deterministic ids."""
    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist: nothing to index")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        if file.suffix.lower() not in TEXT_SUFFIXES:
            continue
        text = file.read_text(encoding="utf-8", errors="replace")
        source = str(file.relative_to(root) if root.is_dir() else file.name)
        for n, chunk in enumerate(splitter.split_text(text)):
            if chunk.strip():
                doc = Document(page_content=chunk, metadata={"source": source, "chunk": n})
                doc.id = document_id(doc, n)
                yield doc


# Below this many tokens to embed, ``mode="auto"`` stays online: the Batch API saves half
# of an embedding bill that is small there (2M tokens of text-embedding-3-small: US$0.04 vs
# 0.02) and its results can take up to 24 hours, against minutes.
AUTO_BATCH_TOKENS = 2_000_000

Mode = Literal["online", "batch", "auto"]


@dataclass
class IndexReport:
    """What a run did: ids added now, ids already in the store, ids that failed and why; the
    path taken (``mode``) and, for ``auto`` and ``batch``, the tokens to embed and what each path
    would cost (US$, documented prices; None for a model without one)."""

    added: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    total: int = 0
    seconds: float = 0.0
    mode: str = "online"
    tokens: int | None = None
    cost_online: float | None = None
    cost_batch: float | None = None
    batch: BatchReport | None = None


class BatchIndexer:
    """Index documents into a vector store in batches, exactly once, checkpointing as it goes.

    Example::

        indexer = BatchIndexer(pool.embeddings(), out="index/")         # a FaissStore in index/
        report = await indexer.aindex(load_folder("docs/"))

        store = InMemoryVectorStore(pool.embeddings())                   # any store with ids
        report = await BatchIndexer(store.embeddings, store=store, out="state/").aindex(docs)

    ``store``: any LangChain ``VectorStore`` whose adds take ``ids`` and replace what they name
    (an upsert); by default a ``FaissStore``, saved to ``out`` as the checkpoint. ``mode``:
    ``"online"`` embeds through the endpoint; ``"batch"`` through OpenAI's Batch API (half the
    price, results within 24 h; needs ``out`` for its journal and the store embedding with this
    ``PooledOpenAIEmbeddings``); ``"auto"`` takes the Batch API from ``batch_threshold_tokens``
    tokens to embed. A run killed half-way and started again adds each document once and pays
    for none twice.
    """

    def __init__(
        self,
        embedding: Embeddings,
        *,
        store: VectorStore | None = None,
        out: str | os.PathLike[str] | None = None,
        batch_size: int = 8192,
        checkpoint_every_s: float = 5.0,
        progress: bool = True,
        on_checkpoint: Callable[[int, Path], None] | None = None,
        mode: Mode = "online",
        batch: BatchSettings | None = None,
        batch_threshold_tokens: int = AUTO_BATCH_TOKENS,
        shard: tuple[int, int] | None = None,
    ) -> None:
        """``batch_size``: documents per store update; large, so that one update's embedding
        requests fill the embedder's concurrency (checkpoints go by time, not by update).
        ``on_checkpoint(documents, folder)`` runs after each checkpoint is saved (the CLI
        prints it); the library itself never prints: progress goes to the bar (``progress``),
        checkpoints to the ``rat_langchain.index`` logger at INFO.

        ``shard=(i, n)``: this process takes the documents whose id hashes to ``i`` modulo
        ``n``; ``n`` processes with ``i`` = 0..n-1 split one corpus without overlap (each its
        own ``out``, one shared store and, with ``backend: redis``, one quota)."""
        if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
            raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
        self.shard = shard
        if mode not in ("online", "batch", "auto"):
            raise ValueError(f"mode must be 'online', 'batch' or 'auto', not {mode!r}")
        if mode != "online" and out is None:
            raise ValueError(f"mode={mode!r} needs out=: the Batch API's journal is kept there")
        self.embedding = embedding
        self.on_checkpoint = on_checkpoint
        self.out = Path(out) if out is not None else None
        self.batch_size = batch_size
        self.checkpoint_every_s = checkpoint_every_s
        self.progress = progress
        self.mode: Mode = mode
        self.batch_settings = batch or BatchSettings()
        self.batch_threshold_tokens = batch_threshold_tokens
        self._faiss = store is None
        self.saved: int | None = None
        """Documents in ``out`` at the last checkpoint (a FaissStore's; None before one)."""
        if store is not None:
            self.store: VectorStore = store
        elif self.out is not None and (readable_dir(self.out) / "manifest.json").exists():
            self.store = FaissStore.load(self.out, embedding)  # resume from the checkpoint
        else:
            self.store = FaissStore(embedding)

    def _held(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` the store already holds."""
        if isinstance(self.store, FaissStore):
            return {i for i in ids if self.store.get_by_ids([i])}
        try:
            return {str(d.id) for d in self.store.get_by_ids(ids)}
        except ValidationError:
            # langchain-chroma builds Document(metadata=None) for a document stored without
            # metadata, which pydantic refuses; Chroma's own get() says which ids it holds
            get = getattr(self.store, "get", None)
            if get is None:
                raise
            return {str(i) for i in get(ids=ids, include=[])["ids"]}

    async def aindex(self, documents: Iterable[Document]) -> IndexReport:
        """Index ``documents``. Interrupted (cancelled, Ctrl-C) or failed, what the store holds
        so far is saved to ``out`` before the exception goes on (``saved`` says how much), so
        the same call again resumes from there."""
        report = IndexReport(mode=self.mode)
        start = time.monotonic()
        try:
            if self.mode == "online":
                await self._sync(documents, report)
            else:
                await self._planned(documents, report)
        except BaseException:
            if self.out is not None:
                try:
                    self._save(report)
                except Exception:  # the run's own error is the one to see
                    _log.exception("could not save what was indexed before the run stopped")
            raise
        if self.out is not None:
            self._save(report)
        report.seconds = time.monotonic() - start
        return report

    # -- the online endpoint -----------------------------------------------------------------------

    async def _sync(self, documents: Iterable[Document], report: IndexReport) -> None:
        last_save = time.monotonic()
        # against the whole corpus where its size is known, documents already held included
        total = len(documents) if isinstance(documents, Sized) and self.shard is None else None
        bar = progress("indexing", "doc", total) if self.progress else SILENT
        finished = False
        try:
            async for batch in self._batches(documents, report, bar):
                await self._add(batch, report)
                bar.update(len(batch))
                if self.out is not None and time.monotonic() - last_save >= self.checkpoint_every_s:
                    self._save(report)
                    last_save = time.monotonic()
            finished = True
        finally:
            end(bar, finished=finished)

    async def _add(self, batch: list[Document], report: IndexReport) -> None:
        texts = [d.page_content for d in batch]
        metas = [d.metadata for d in batch]
        ids = [str(d.id) for d in batch]
        try:
            await self.store.aadd_texts(texts, metas, ids=ids)
            report.added += len(batch)
        except EmbeddingInputError as exc:  # add what was embedded, report the rest
            keep = [i for i in range(len(batch)) if i not in exc.failed]
            for i, reason in exc.failed.items():
                report.failed[ids[i]] = reason
            if keep:
                await self.store.aadd_texts(
                    [texts[i] for i in keep],
                    [metas[i] for i in keep],
                    ids=[ids[i] for i in keep],
                )
                report.added += len(keep)

    async def _batches(
        self, documents: Iterable[Document], report: IndexReport, bar: Any
    ) -> AsyncIterator[list[Document]]:
        """Batches of the documents the store does not hold; those it holds (and repeats)
        advance ``bar`` here, the others once added."""
        batch: list[Document] = []
        counted = report.skipped
        for doc in self._unique(documents, report, set()):
            batch.append(doc)
            if len(batch) >= self.batch_size:
                fresh = self._fresh(batch, report)
                bar.update(report.skipped - counted)
                counted = report.skipped
                if fresh:
                    yield fresh
                batch = []
        fresh = self._fresh(batch, report) if batch else []
        bar.update(report.skipped - counted)
        if fresh:
            yield fresh

    def _fresh(self, batch: list[Document], report: IndexReport) -> list[Document]:
        """The documents of ``batch`` the store does not hold yet (the rest count as skipped)."""
        held = self._held([str(d.id) for d in batch])
        report.skipped += len(held)
        return [d for d in batch if str(d.id) not in held]

    def _unique(
        self, documents: Iterable[Document], report: IndexReport, seen: set[str]
    ) -> Iterator[Document]:
        """Each document of this shard once, with its deterministic id (a repeat is skipped)."""
        for position, doc in enumerate(documents):
            doc_id = document_id(doc, position)
            if self.shard is not None and _shard_of(doc_id, self.shard[1]) != self.shard[0]:
                continue  # another process's
            report.total += 1
            if doc_id in seen:
                report.skipped += 1
                continue
            seen.add(doc_id)
            yield Document(id=doc_id, page_content=doc.page_content, metadata=doc.metadata)

    # -- the Batch API ---------------------------------------------------------------------------

    async def _planned(self, documents: Iterable[Document], report: IndexReport) -> None:
        corpus = {str(d.id): d for d in self._unique(documents, report, set())}
        held = self._held(list(corpus))
        report.skipped += len(held)
        todo = [i for i in corpus if i not in held]
        model = str(getattr(self.embedding, "model", ""))
        counts = {i: len(encode(corpus[i].page_content, model)) for i in todo}
        report.tokens = sum(counts.values())
        report.cost_online = estimate_cost(report.tokens, model, batch=False)
        report.cost_batch = estimate_cost(report.tokens, model, batch=True)
        use_batch = self.mode == "batch" or report.tokens >= self.batch_threshold_tokens
        report.mode = "batch" if use_batch else "online"
        _log.info(
            "%d documents, %d tokens to embed: US$%s online, US$%s through the Batch "
            "API; taking %s",
            len(todo), report.tokens, _money(report.cost_online), _money(report.cost_batch),
            report.mode,
        )  # fmt: skip
        if not use_batch:
            for start in range(0, len(todo), self.batch_size):
                await self._add([corpus[i] for i in todo[start : start + self.batch_size]], report)
            return
        embedding = self.embedding
        if not isinstance(embedding, BatchEmbeddings):
            raise TypeError(
                "mode='batch' needs a PooledOpenAIEmbeddings (pool.embeddings()): the Batch API "
                f"is OpenAI's, got {type(embedding).__name__}"
            )
        if self.store.embeddings is not embedding:
            raise TypeError(
                "mode='batch': the store must embed with the same PooledOpenAIEmbeddings given "
                "to BatchIndexer (its vectors reach the store through that object)"
            )
        assert self.out is not None

        async def add(docs: list[Document], vectors: np.ndarray) -> None:
            with embedding.prefilled(
                dict(zip((d.page_content for d in docs), vectors, strict=True))
            ):
                await self.store.aadd_documents(docs, ids=[str(d.id) for d in docs])
            report.added += len(docs)

        async def checkpoint() -> None:
            if self._faiss:
                self._save(report)

        report.batch = await batch_embed(
            embedding,
            corpus,
            todo,
            add,
            self.out.parent / f"{self.out.name}.batches",
            self.batch_settings,
            tokens=counts,
            checkpoint=checkpoint,
            dimension=getattr(self.store, "dimension", None),  # a FaissStore's, once it holds any
        )
        report.failed.update(report.batch.failed)

    def _save(self, report: IndexReport) -> None:
        assert self.out is not None
        if isinstance(self.store, FaissStore):
            self.store.save(self.out)
            self.saved = len(self.store)
            _log.info("checkpoint: %d documents saved to %s", len(self.store), self.out)
            if self.on_checkpoint is not None:
                self.on_checkpoint(len(self.store), self.out)
        failed = self.out.parent / f"{self.out.name}.failed.json"
        if report.failed:
            failed.write_text(json.dumps(report.failed, indent=2), encoding="utf-8")


def _shard_of(doc_id: str, count: int) -> int:
    """A stable shard number for ``doc_id`` (the same in every process and run)."""
    return int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") % count


def _money(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"
