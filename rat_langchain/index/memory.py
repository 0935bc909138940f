"""MemoryStore: per-user memories over FaissStore, written in batches or in the background.

Why background writes live in a TaskGroup owned by ``async with``: a memory update should not sit on
the agent's critical path, but it must not be lost either. Leaving the block awaits every pending
write (and raises if one failed), so nothing is fire-and-forget.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from rat_langchain.errors import shorten
from rat_langchain.index._atomic import atomic_dir
from rat_langchain.index._files import open_folder, read_json, require
from rat_langchain.index.faiss_store import FaissStore, Metric

__all__ = ["MemoryStore"]


class MemoryStore:
    """Memories per user, each user in a FaissStore of their own.

    Example::

        async with MemoryStore(pool.embeddings()) as memory:
            await memory.add_memories_batch("ana", ["likes tea", "lives in Porto"])
            memory.add_memory_later("ana", "asked about flights")  # off the critical path
            hits = await memory.search_memories("ana", "what does she drink?")
        # leaving the block awaited the background write
    """

    def __init__(self, embedding: Embeddings, *, metric: Metric = "cosine") -> None:
        self.embedding = embedding
        self.metric = metric
        self._stores: dict[str, FaissStore] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.pending = 0

    def _store(self, user: str) -> FaissStore:
        if not isinstance(user, str) or not user:
            raise ValueError(f"user must be a non-empty string, got {user!r}")
        store = self._stores.get(user)
        if store is None:
            store = self._stores[user] = FaissStore(self.embedding, metric=self.metric)
        return store

    async def add_memories_batch(
        self,
        user: str,
        texts: Sequence[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
    ) -> list[str]:
        """Embed ``texts`` in as few requests as the batch size allows; one bulk FAISS update."""
        return await self._store(user).aadd_texts(list(texts), metadatas, ids=ids)

    async def add_memory(self, user: str, text: str, metadata: dict[str, Any] | None = None) -> str:
        return (await self.add_memories_batch(user, [text], [metadata or {}]))[0]

    def add_memory_later(
        self, user: str, text: str, metadata: dict[str, Any] | None = None
    ) -> None:
        """Write in the background; awaited when the ``async with`` block ends."""
        if self._tasks is None:
            raise RuntimeError("background writes need `async with MemoryStore(...) as memory:`")
        self._store(user)  # validate now, not in the task
        self.pending += 1

        async def write() -> None:
            try:
                await self.add_memory(user, text, metadata)
            finally:
                self.pending -= 1

        task = self._tasks.create_task(write())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def flush(self) -> None:
        """Wait for the background writes started so far."""
        while self._running:
            await asyncio.wait(list(self._running))

    @property
    def users(self) -> list[str]:
        return sorted(self._stores)

    # -- persistence ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write every user's memories under ``path`` atomically (each user a saved FaissStore in
        a folder named by a hash of the user id, plus ``memory.json`` mapping ids to folders).
        Background writes still running are not included: ``await asave(path)`` waits for them."""
        with atomic_dir(Path(path)) as tmp:
            users: dict[str, str] = {}
            for user, store in sorted(self._stores.items()):
                if not len(store):
                    continue
                folder = _folder_name(user)
                store.save(tmp / "users" / folder)
                users[user] = folder
            manifest = {
                "format": "rat_langchain.MemoryStore",
                "version": _VERSION,
                "metric": self.metric,
            }
            (tmp / "memory.json").write_text(json.dumps({**manifest, "users": users}))

    async def asave(self, path: str | os.PathLike[str]) -> None:
        """Wait for pending background writes, then save (off the event loop)."""
        await self.flush()
        await asyncio.to_thread(self.save, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], embedding: Embeddings) -> Self:
        """Read what ``save`` wrote; IndexLoadError names what is missing or damaged.

        The folder is untrusted (docs/security.md): ``memory.json`` may name only the folders a
        save makes (``users/`` + the hash of each user id), so no entry can reach outside it,
        and only a known version and metric are accepted."""
        folder = open_folder(path, "MemoryStore")
        where = folder / "memory.json"
        manifest = read_json(folder, "memory.json", max_bytes=_MAX_MANIFEST_BYTES)
        require(
            isinstance(manifest, dict)
            and manifest.get("format") == "rat_langchain.MemoryStore"
            and isinstance(manifest.get("users"), dict),
            where,
            "not a MemoryStore manifest",
        )
        require(
            manifest.get("version") == _VERSION,
            where,
            f"saved in version {shorten(manifest.get('version'), 20)}, this one reads {_VERSION}",
        )
        metric = manifest.get("metric", "cosine")
        require(metric in ("cosine", "l2"), where, f"unknown metric {shorten(metric, 40)}")
        users = manifest["users"]
        if users:
            open_folder(folder / "users", "MemoryStore's users folder")
        memory = cls(embedding, metric=metric)
        for user, name in users.items():
            require(
                isinstance(user, str) and bool(user) and name == _folder_name(user),
                where,
                f"{shorten(name, 60)} is not the folder a save makes for {shorten(user, 60)}",
            )
            memory._stores[user] = FaissStore.load(folder / "users" / name, embedding)
        return memory

    async def search_memories(self, user: str, query: str, k: int = 4) -> list[Document]:
        store = self._stores.get(user)
        if store is None or not len(store):
            return []
        return await store.asimilarity_search(query, k=k)

    def count(self, user: str) -> int:
        store = self._stores.get(user)
        return 0 if store is None else len(store)

    async def delete(self, user: str, ids: list[str] | None = None) -> None:
        """Delete some of a user's memories, or all of them with ``ids=None``."""
        if ids is None:
            self._stores.pop(user, None)
            return
        store = self._stores.get(user)
        if store is not None:
            await store.adelete(ids)

    async def __aenter__(self) -> Self:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tasks, self._tasks = self._tasks, None
        if tasks is not None:
            await tasks.__aexit__(exc_type, exc, tb)


_VERSION = 1
_MAX_MANIFEST_BYTES = 64 * 1024 * 1024


def _folder_name(user: str) -> str:
    """The folder a save gives a user: a hash, so no user id can name a path."""
    return hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()[:24]
