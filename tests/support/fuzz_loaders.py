"""Damage a saved FaissStore and MemoryStore in many random ways and load each result.

Run as ``python -m tests.support.fuzz_loaders CASES SEED`` (the test runs it in a process of its
own, so that its peak memory can be read): prints one JSON line with the outcome of every case,
the slowest case and the peak memory above what loading an undamaged store needs.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.embeddings import DeterministicFakeEmbedding

from rat_langchain import FaissStore, IndexLoadError, MemoryStore

EMBEDDING = DeterministicFakeEmbedding(size=8)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _json_swap(data: bytes, rng: random.Random) -> bytes:
    """A field of a JSON object given another field's value, or a value of another type."""
    try:
        value = json.loads(data)
    except ValueError:
        return data
    if not isinstance(value, dict) or not value:
        return data
    strange: list[Any] = [
        -1,
        0,
        2**40,
        2**63,
        True,
        None,
        "x",
        1.5,
        float("nan"),
        [],
        {},
        "../../etc",
        "/tmp",
    ]
    node: dict[str, Any] = value
    if "users" in node and isinstance(node["users"], dict) and node["users"] and rng.random() < 0.3:
        node = node["users"]
    elif rng.random() < 0.3 and any(isinstance(v, dict) for v in node.values()):
        node = rng.choice([v for v in node.values() if isinstance(v, dict)])
    key = rng.choice(list(node))
    others = [v for k, v in node.items() if k != key]
    node[key] = rng.choice(others + strange) if others else rng.choice(strange)
    return json.dumps(value).encode()


def _damage(folder: Path, rng: random.Random) -> str:
    files = [p for p in folder.rglob("*") if p.is_file()]
    path = rng.choice(files)
    data = path.read_bytes()
    kind = rng.choice(
        ["truncate", "flip", "swap", "swap"]
        if path.suffix == ".json"
        else ["truncate", "flip", "flip"]
    )
    if kind == "truncate":
        data = data[: rng.randrange(len(data) + 1)]
    elif kind == "flip" and data:
        at = rng.randrange(len(data))
        data = data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
    else:
        data = _json_swap(data, rng)
    path.write_bytes(data)
    return f"{kind} {path.relative_to(folder)}"


def _faiss_view(store: FaissStore) -> Any:
    return sorted(
        (d.id, d.page_content, json.dumps(d.metadata, sort_keys=True))
        for d in store.similarity_search("document", k=len(store) or 1)
    )


def _memory_view(memory: MemoryStore) -> Any:
    async def view() -> Any:
        return {
            user: sorted(
                (d.id, d.page_content, json.dumps(d.metadata, sort_keys=True))
                for d in await memory.search_memories(user, "memory", k=memory.count(user))
            )
            for user in memory.users
        }

    return asyncio.run(view())


def main(cases: int, seed: int) -> None:
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp())
    store = FaissStore(EMBEDDING)
    store.add_texts(
        [f"document {i}" for i in range(20)],
        [{"n": i} for i in range(20)],
        ids=[f"d{i}" for i in range(20)],
    )
    store.delete(["d3"])
    store.save(work / "faiss")
    memory = MemoryStore(EMBEDDING)
    for user in ("ana", "bo"):
        texts = [f"{user} memory {i}" for i in range(5)]
        asyncio.run(memory.add_memories_batch(user, texts, ids=[f"{user}{i}" for i in range(5)]))
    memory.save(work / "memory")
    expected = {
        "faiss": _faiss_view(FaissStore.load(work / "faiss", EMBEDDING)),
        "memory": _memory_view(MemoryStore.load(work / "memory", EMBEDDING)),
    }
    baseline = _peak_mb()
    outcomes: dict[str, int] = {"loaded intact": 0, "IndexLoadError": 0}
    wrong: list[str] = []
    slowest = 0.0
    for case in range(cases):
        kind = "faiss" if case % 2 == 0 else "memory"
        target = work / f"case-{case}"
        shutil.copytree(work / kind, target)
        what = _damage(target, rng)
        started = time.perf_counter()
        try:
            if kind == "faiss":
                view = _faiss_view(FaissStore.load(target, EMBEDDING))
            else:
                view = _memory_view(MemoryStore.load(target, EMBEDDING))
        except IndexLoadError:
            outcomes["IndexLoadError"] += 1
        except Exception as exc:  # anything else is a failure of the loader
            wrong.append(f"{kind}: {what}: {type(exc).__name__}: {exc}"[:300])
        else:
            if view == expected[kind]:
                outcomes["loaded intact"] += 1
            else:
                wrong.append(f"{kind}: {what}: loaded, but not what was saved")
        slowest = max(slowest, time.perf_counter() - started)
        shutil.rmtree(target)
    shutil.rmtree(work)
    print(
        json.dumps(
            {
                "outcomes": outcomes,
                "wrong": wrong,
                "slowest_s": slowest,
                "peak_mb_over_baseline": _peak_mb() - baseline,
            }
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
