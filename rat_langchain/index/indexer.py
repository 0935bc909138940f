"""BatchIndexer: index a large corpus into a FaissStore so that a run killed half-way and started
again ends with every document exactly once.

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
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_text_splitters import RecursiveCharacterTextSplitter
from tqdm import tqdm

from rat_langchain.errors import EmbeddingInputError
from rat_langchain.index._atomic import readable_dir
from rat_langchain.index.faiss_store import FaissStore

__all__ = ["BatchIndexer", "IndexReport", "load_folder"]

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


@dataclass
class IndexReport:
    """What a run did: ids added now, ids already in the store, ids that failed and why."""

    added: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    total: int = 0
    seconds: float = 0.0


class BatchIndexer:
    """Index documents into a FaissStore in batches, checkpointing to ``out``.

    Example::

        indexer = BatchIndexer(pool.embeddings(), out="index/")
        report = await indexer.aindex(load_folder("docs/"))
    """

    def __init__(
        self,
        embedding: Embeddings,
        *,
        out: str | os.PathLike[str] | None = None,
        batch_size: int = 500,
        checkpoint_every_s: float = 5.0,
        progress: bool = True,
        on_checkpoint: Callable[[int, Path], None] | None = None,
    ) -> None:
        """``on_checkpoint(documents, folder)`` runs after each checkpoint is saved (the CLI
        prints it); the library itself never prints: progress goes to the bar (``progress``),
        checkpoints to the ``rat_langchain.index`` logger at INFO."""
        self.embedding = embedding
        self.on_checkpoint = on_checkpoint
        self.out = Path(out) if out is not None else None
        self.batch_size = batch_size
        self.checkpoint_every_s = checkpoint_every_s
        self.progress = progress
        if self.out is not None and (readable_dir(self.out) / "manifest.json").exists():
            self.store = FaissStore.load(self.out, embedding)  # resume from the checkpoint
        else:
            self.store = FaissStore(embedding)

    async def aindex(self, documents: Iterable[Document]) -> IndexReport:
        report = IndexReport()
        start = time.monotonic()
        last_save = start
        bar = tqdm(desc="indexing", unit="doc", disable=not self.progress)
        try:
            async for batch in self._batches(documents, report):
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
                bar.update(len(batch))
                if self.out is not None and time.monotonic() - last_save >= self.checkpoint_every_s:
                    self._save(report)
                    last_save = time.monotonic()
        finally:
            bar.close()
        if self.out is not None:
            self._save(report)
        report.seconds = time.monotonic() - start
        return report

    async def _batches(
        self, documents: Iterable[Document], report: IndexReport
    ) -> AsyncIterator[list[Document]]:
        batch: list[Document] = []
        seen: set[str] = set()
        for position, doc in enumerate(documents):
            report.total += 1
            doc_id = document_id(doc, position)
            if doc_id in seen or self.store.get_by_ids([doc_id]):
                report.skipped += 1
                continue
            seen.add(doc_id)
            batch.append(Document(id=doc_id, page_content=doc.page_content, metadata=doc.metadata))
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _save(self, report: IndexReport) -> None:
        assert self.out is not None
        self.store.save(self.out)
        failed = self.out.parent / f"{self.out.name}.failed.json"
        if report.failed:
            failed.write_text(json.dumps(report.failed, indent=2), encoding="utf-8")
        _log.info("checkpoint: %d documents saved to %s", len(self.store), self.out)
        if self.on_checkpoint is not None:
            self.on_checkpoint(len(self.store), self.out)
