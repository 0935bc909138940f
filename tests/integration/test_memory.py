"""MemoryStore against the simulator's embeddings."""

from __future__ import annotations

import asyncio

import pytest

from rat_langchain import ClientPool, RatConfig
from rat_langchain.index.memory import MemoryStore
from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY


def _embeddings(sim: SimulatorThread) -> object:
    pool = ClientPool(
        RatConfig.from_dict({"performance": {"rate_limiting": {"enabled": False}}}, env={})
    )
    return pool.embeddings(base_url=sim.base_url, api_key=API_KEY)


def test_batch_write_is_one_request_and_users_are_separate(sim: SimulatorThread) -> None:
    async def main() -> None:
        memory = MemoryStore(_embeddings(sim))  # type: ignore[arg-type]
        facts = [f"ana fact {i} about tea and porto" for i in range(60)]
        await memory.add_memories_batch("ana", facts)
        assert sim.stats().count("embeddings") == 1  # one request for the whole batch
        await memory.add_memory("bob", "bob likes coffee")
        hits = await memory.search_memories("ana", "ana fact 7 about tea and porto", k=2)
        assert hits[0].page_content == facts[7]
        assert all(
            "bob" not in h.page_content for h in await memory.search_memories("ana", "coffee")
        )
        assert await memory.search_memories("carol", "anything") == []
        await memory.delete("ana", [hits[0].id])  # type: ignore[list-item]
        assert memory.count("ana") == 59
        await memory.delete("bob")
        assert memory.count("bob") == 0

    asyncio.run(main())


def test_background_writes_are_awaited_on_exit_never_lost(sim: SimulatorThread) -> None:
    sim.configure(latency_ms=30)

    async def main() -> None:
        async with MemoryStore(_embeddings(sim)) as memory:  # type: ignore[arg-type]
            for i in range(10):
                memory.add_memory_later("ana", f"note {i}")
            assert memory.pending == 10  # nothing has blocked the caller
        assert memory.pending == 0
        assert memory.count("ana") == 10
        with pytest.raises(RuntimeError, match="async with"):
            memory.add_memory_later("ana", "too late")
        with pytest.raises(ValueError, match="user"):
            await memory.add_memory("", "x")

    asyncio.run(main())


def test_memories_survive_save_and_load(sim: SimulatorThread, tmp_path: object) -> None:
    from pathlib import Path

    from rat_langchain import IndexLoadError

    folder = Path(str(tmp_path)) / "memories"

    async def main() -> None:
        emb = _embeddings(sim)
        async with MemoryStore(emb) as memory:  # type: ignore[arg-type]
            await memory.add_memories_batch("ana/../x", ["likes tea", "lives in Porto"])
            memory.add_memory_later("bob", "drinks coffee")
            await memory.asave(folder)  # waits for bob's background write first
        loaded = MemoryStore.load(folder, emb)  # type: ignore[arg-type]
        assert loaded.users == ["ana/../x", "bob"]  # odd user ids are safe as folder names
        assert loaded.count("bob") == 1
        hits = await loaded.search_memories("ana/../x", "likes tea", k=1)
        assert hits[0].page_content == "likes tea"
        (folder / "memory.json").write_text("{broken")
        with pytest.raises(IndexLoadError, match="damaged"):
            MemoryStore.load(folder, emb)  # type: ignore[arg-type]

    asyncio.run(main())
