"""MemoryStore: per-user memories in one FaissStore partitioned by user, written in batches or
in the background.

Why one store for every user: a FAISS index of its own per user cost about 45 KB before any
memory, 4.5 GB at 10^5 users. Now each memory is a document of one shared store under an id
that carries its user (``_doc_id``), a user's ids are kept per user, and a search scores that
user's vectors only (``FaissStore.search_among``): exact, and as cheap as the user's memories,
whatever the number of users. No user's search can reach another's memories: it is given only
its own ids.

Why background writes live in a TaskGroup owned by ``async with``: a memory update should not sit on
the agent's critical path, but it must not be lost either. Leaving the block awaits every pending
write (and raises if one failed), so nothing is fire-and-forget.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
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


def _doc_id(user: str, memory_id: str) -> str:
    """The shared store's id of a user's memory: both parts, unambiguously (JSON), so two
    users' memories with the same id never collide and the user is read back from it."""
    return json.dumps([user, memory_id], ensure_ascii=False, separators=(",", ":"))


def _parts(doc_id: str) -> tuple[str, str] | None:
    try:
        parts = json.loads(doc_id)
    except ValueError:
        return None
    if (
        isinstance(parts, list)
        and len(parts) == 2
        and all(isinstance(p, str) for p in parts)
        and parts[0]
    ):
        return parts[0], parts[1]
    return None


class MemoryStore:
    """Memories per user, in one FaissStore partitioned by user.

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
        self._store = FaissStore(embedding, metric=metric)
        self._users: dict[str, dict[str, None]] = {}  # user -> their memory ids, in order
        self._tasks: asyncio.TaskGroup | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.pending = 0

    @staticmethod
    def _check(user: str) -> None:
        if not isinstance(user, str) or not user:
            raise ValueError(f"user must be a non-empty string, got {user!r}")

    async def add_memories_batch(
        self,
        user: str,
        texts: Sequence[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
    ) -> list[str]:
        """Embed ``texts`` in as few requests as the batch size allows; one bulk FAISS update.
        Returns the memories' ids (``ids``, or new ones); the same id replaces its memory."""
        self._check(user)
        texts = list(texts)
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(ids)} ids")
        mine = [str(i) for i in ids] if ids is not None else [str(uuid.uuid4()) for _ in texts]
        await self._store.aadd_texts(texts, metadatas, ids=[_doc_id(user, i) for i in mine])
        held = self._users.setdefault(user, {})
        held.update(dict.fromkeys(mine))
        return mine

    async def add_memory(self, user: str, text: str, metadata: dict[str, Any] | None = None) -> str:
        return (await self.add_memories_batch(user, [text], [metadata or {}]))[0]

    def add_memory_later(
        self, user: str, text: str, metadata: dict[str, Any] | None = None
    ) -> None:
        """Write in the background; awaited when the ``async with`` block ends."""
        if self._tasks is None:
            raise RuntimeError("background writes need `async with MemoryStore(...) as memory:`")
        self._check(user)  # validate now, not in the task
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
        """Users with at least one memory, sorted."""
        return sorted(user for user, held in self._users.items() if held)

    # -- persistence ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write every user's memories under ``path`` atomically: the shared store in
        ``store/`` and ``memory.json``. Background writes still running are not included:
        ``await asave(path)`` waits for them."""
        with atomic_dir(Path(path)) as tmp:
            self._store.save(tmp / "store")
            manifest = {
                "format": "rat_langchain.MemoryStore",
                "version": _VERSION,
                "metric": self.metric,
                "users": len(self.users),
            }
            (tmp / "memory.json").write_text(json.dumps(manifest))

    async def asave(self, path: str | os.PathLike[str]) -> None:
        """Wait for pending background writes, then save (off the event loop)."""
        await self.flush()
        await asyncio.to_thread(self.save, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], embedding: Embeddings) -> Self:
        """Read what ``save`` wrote (this version's one store, or version 1's store per user,
        merged into one); IndexLoadError names what is missing or damaged.

        The folder is untrusted (docs/security.md): only ``store/`` (or, in version 1, the
        folders a save makes: ``users/`` + the hash of each user id) is read, so no entry can
        reach outside it; every id must name its user; only known versions and metrics."""
        folder = open_folder(path, "MemoryStore")
        where = folder / "memory.json"
        manifest = read_json(folder, "memory.json", max_bytes=_MAX_MANIFEST_BYTES)
        require(
            isinstance(manifest, dict) and manifest.get("format") == "rat_langchain.MemoryStore",
            where,
            "not a MemoryStore manifest",
        )
        version = manifest.get("version")
        require(
            version in (1, _VERSION),
            where,
            f"saved in version {shorten(version, 20)}, this one reads 1 and {_VERSION}",
        )
        metric = manifest.get("metric", "cosine")
        require(metric in ("cosine", "l2"), where, f"unknown metric {shorten(metric, 40)}")
        memory = cls(embedding, metric=metric)
        if version == 1:
            memory._load_v1(folder, manifest, embedding)
            return memory
        memory._store = FaissStore.load(folder / "store", embedding)
        require(memory._store.metric == metric, where, "the store's metric is not the manifest's")
        for doc_id in memory._store.ids:
            parts = _parts(doc_id)
            require(parts is not None, where, f"{shorten(doc_id, 60)} names no user")
            assert parts is not None
            memory._users.setdefault(parts[0], {})[parts[1]] = None
        return memory

    def _load_v1(self, folder: Path, manifest: dict[str, Any], embedding: Embeddings) -> None:
        """Version 1 kept a FaissStore per user: each is read and its vectors moved into the
        shared store as they are (not embedded again)."""
        where = folder / "memory.json"
        users = manifest.get("users")
        require(isinstance(users, dict), where, "not a MemoryStore manifest")
        assert isinstance(users, dict)
        for user, name in users.items():  # every entry checked before any folder is read
            require(
                isinstance(user, str) and bool(user) and name == _folder_name(user),
                where,
                f"{shorten(name, 60)} is not the folder a save makes for {shorten(user, 60)}",
            )
        if users:
            open_folder(folder / "users", "MemoryStore's users folder")
        for user, name in users.items():
            old = FaissStore.load(folder / "users" / name, embedding)
            ids = old.ids
            docs = old.get_by_ids(ids)
            self._store.add_vectors(
                [d.page_content for d in docs],
                old.vectors(ids),
                [d.metadata for d in docs],
                ids=[_doc_id(user, i) for i in ids],
            )
            self._users[user] = dict.fromkeys(ids)

    async def search_memories(self, user: str, query: str, k: int = 4) -> list[Document]:
        """The ``k`` nearest of ``user``'s memories (``[]`` for a user with none); each
        document's id is the memory's."""
        held = self._users.get(user)
        if not held:
            return []
        vector = await self.embedding.aembed_query(query)
        ids = [_doc_id(user, i) for i in held]
        pairs = await asyncio.to_thread(self._store.search_among, vector, ids, k)
        return [
            Document(id=_parts(d.id or "")[1], page_content=d.page_content, metadata=d.metadata)  # type: ignore[index]
            for d, _ in pairs
        ]

    def count(self, user: str) -> int:
        return len(self._users.get(user, ()))

    async def delete(self, user: str, ids: list[str] | None = None) -> None:
        """Delete some of a user's memories, or all of them with ``ids=None``."""
        held = self._users.get(user)
        if not held:
            return
        gone = list(held) if ids is None else [str(i) for i in ids if str(i) in held]
        if gone:
            await self._store.adelete([_doc_id(user, i) for i in gone])
        for i in gone:
            held.pop(i, None)
        if not held:
            del self._users[user]

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


_VERSION = 2
_MAX_MANIFEST_BYTES = 64 * 1024 * 1024


def _folder_name(user: str) -> str:
    """The folder a save gives a user: a hash, so no user id can name a path."""
    return hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()[:24]
