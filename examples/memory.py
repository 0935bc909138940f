"""Per-user memories for an agent: write them in a batch or in the background, search them by
meaning, save them and load them again.

Runs against the embedded simulator unless OPENAI_API_KEY is set (then OPENAI_BASE_URL, if set,
or api.openai.com). The simulator's vectors are pseudo-random, so there the nearest memory is
not the closest in meaning; against a real embedding model it is.

    .venv/bin/python examples/memory.py --out /tmp/memories
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rat_langchain import ClientPool, MemoryStore, RatConfig
from rat_langchain.sim import endpoint_or_simulator


async def remember(pool: ClientPool, out: Path) -> None:
    embeddings = pool.embeddings()
    async with MemoryStore(embeddings) as memory:
        await memory.add_memories_batch("ana", ["likes green tea", "lives in Porto"])  # awaited
        memory.add_memory_later("ana", "asked about flights to Oslo")  # off the critical path
        memory.add_memory_later("ben", "is allergic to peanuts")
    # leaving the block awaited both background writes: nothing is lost
    print(f"users: {memory.users}, ana has {memory.count('ana')} memories")
    hits = await memory.search_memories("ana", "what does she drink?", k=2)
    print("ana, nearest:", [hit.page_content for hit in hits])
    await memory.asave(out)
    again = MemoryStore.load(out, embeddings)
    print(f"loaded from {out}: ben has {again.count('ben')} memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(".rat_cache/memories"))
    args = parser.parse_args()
    with endpoint_or_simulator(latency_ms=20) as endpoint:  # the simulator unless a key is set
        pool = ClientPool(RatConfig.load().with_endpoint(**endpoint))
        asyncio.run(remember(pool, args.out))


if __name__ == "__main__":
    main()
