"""EmbeddingCache: vectors on disk, so re-indexing unchanged documents costs nothing.

Keyed by (model, dimensions, text) through a SHA-256 digest, stored as float32 bytes in SQLite
(the standard library's; WAL mode so readers do not block the writer). A row that does not
decode to a finite vector of its recorded size is treated as a miss and replaced, never
returned. LangChain's ``CacheBackedEmbeddings`` does the same job over a generic byte store with
JSON-encoded vectors and one key per text per call; this one batches lookups (one query per 500
texts) and keeps hit/miss counters.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache"]

_CHUNK = 500  # keys per query: well under SQLite's limit on bound parameters


class EmbeddingCache:
    """A persistent (model, dimensions, text) → vector cache.

    Example::

        cache = EmbeddingCache(".rat_cache/embeddings.sqlite3")
        emb = pool.embeddings(cache=cache)        # or caching.embeddings: true in config.yaml
        await emb.aembed_documents(texts)          # the second time: no request at all
        cache.hits, cache.misses
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors "
            "(key BLOB PRIMARY KEY, dim INTEGER NOT NULL, vec BLOB NOT NULL) WITHOUT ROWID"
        )
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r}, hits={self.hits}, misses={self.misses})"

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()
        return int(count)

    @staticmethod
    def key(model: str, dimensions: int | None, text: str) -> bytes:
        head = f"{model}\0{dimensions or ''}\0".encode()
        return hashlib.sha256(head + text.encode("utf-8", "surrogatepass")).digest()

    def get_many(
        self, model: str, dimensions: int | None, texts: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """The cached vectors among ``texts`` (text → float32 vector); counts hits and misses."""
        keys = {self.key(model, dimensions, text): text for text in texts}
        found: dict[str, np.ndarray] = {}
        listed = list(keys)
        with self._lock:
            for start in range(0, len(listed), _CHUNK):
                chunk = listed[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, dim, vec FROM vectors WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
                for key, dim, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32) if len(blob) == 4 * dim else None
                    if vector is None or dim == 0 or not np.isfinite(vector).all():
                        self.corrupt += 1  # re-embedded and overwritten by the next put
                        continue
                    found[keys[key]] = vector
            self.hits += len(found)
            self.misses += len(keys) - len(found)
        return found

    def put_many(
        self, model: str, dimensions: int | None, vectors: Mapping[str, np.ndarray]
    ) -> None:
        rows = [
            (
                self.key(model, dimensions, text),
                int(v.shape[0]),
                np.ascontiguousarray(v, dtype=np.float32).tobytes(),
            )
            for text, v in vectors.items()
        ]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt}

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM vectors")

    def close(self) -> None:
        with self._lock:
            self._db.close()
