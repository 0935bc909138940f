"""Saved folders are untrusted input (docs/security.md): a damaged or hostile folder loads
correctly or raises IndexLoadError naming the file, quickly and without a large allocation,
and reaches nothing outside itself."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from rat_langchain import FaissStore, IndexLoadError, MemoryStore
from rat_langchain.index._files import digest

EMBEDDING = DeterministicFakeEmbedding(size=8)
ROOT = Path(__file__).resolve().parents[2]


def _saved(folder: Path, n: int = 4) -> FaissStore:
    store = FaissStore(EMBEDDING)
    store.add_texts([f"text {i}" for i in range(n)], ids=[f"t{i}" for i in range(n)])
    store.save(folder)
    return store


def _rewrite(folder: Path, name: str, data: bytes) -> None:
    """Replace a file and record it in the manifest as a save would (size and checksum), so
    that only the content is hostile."""
    (folder / name).write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    if name == "index.faiss":
        manifest["index_bytes"] = len(data)
    manifest["sha256"][name] = digest(data)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _codes_at(data: bytes, n: int, d: int = 8) -> int:
    """Where the flat index's vectors start: they are followed by the id map (a count and n
    int64 ids) at the end of the file."""
    return len(data) - 8 * n - 8 - 4 * d * n


def _set_manifest(folder: Path, **fields: object) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(fields)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_header_declaring_a_huge_vector_fails_before_allocating(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    _saved(folder, n=1)
    data = bytearray((folder / "index.faiss").read_bytes())
    at = _codes_at(bytes(data), n=1) - 8  # the element count of the flat codes vector
    assert struct.unpack("<Q", data[at : at + 8]) == (8,)
    data[at : at + 8] = struct.pack("<Q", 2**30)  # declares 4 GiB of vectors
    _rewrite(folder, "index.faiss", bytes(data))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(IndexLoadError, match=r"index\.faiss"):
        FaissStore.load(folder, EMBEDDING)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100


def test_symlinks_fifos_and_devices_are_never_read(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    _saved(folder)
    (folder / "index.faiss").unlink()
    (folder / "index.faiss").symlink_to("/dev/zero")
    with pytest.raises(IndexLoadError, match="not a regular file"):
        FaissStore.load(folder, EMBEDDING)
    _saved(folder)
    (folder / "docstore.json").unlink()
    os.mkfifo(folder / "docstore.json")
    done = threading.Event()

    def load() -> None:
        with pytest.raises(IndexLoadError, match="not a regular file"):
            FaissStore.load(folder, EMBEDDING)
        done.set()

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert done.is_set()  # a FIFO would have blocked the reader
    other = tmp_path / "other"
    _saved(other)
    link = tmp_path / "link"
    link.symlink_to(other)
    with pytest.raises(IndexLoadError, match="not a folder"):
        FaissStore.load(link, EMBEDDING)  # a symlinked folder loads nothing from elsewhere


def test_inconsistent_ids_keys_and_vectors_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    _saved(folder)
    _set_manifest(folder, next_key=2)  # below stored keys: later adds would reuse them
    with pytest.raises(IndexLoadError, match="next_key"):
        FaissStore.load(folder, EMBEDDING)
    _saved(folder)
    docs = json.loads((folder / "docstore.json").read_text())
    docs["t1"]["key"] = docs["t0"]["key"]  # two documents on one vector
    _rewrite(folder, "docstore.json", json.dumps(docs).encode())
    with pytest.raises(IndexLoadError, match="used by two documents"):
        FaissStore.load(folder, EMBEDDING)
    _saved(folder)
    data = bytearray((folder / "index.faiss").read_bytes())
    at = _codes_at(bytes(data), n=4)
    data[at : at + 4] = np.float32("nan").tobytes()
    _rewrite(folder, "index.faiss", bytes(data))
    with pytest.raises(IndexLoadError, match="not finite"):
        FaissStore.load(folder, EMBEDDING)
    _saved(folder)
    _set_manifest(folder, metric="cosine2")
    with pytest.raises(IndexLoadError, match="unknown metric"):
        FaissStore.load(folder, EMBEDDING)
    _saved(folder)
    (folder / "docstore.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(IndexLoadError, match=r"docstore\.json"):
        FaissStore.load(folder, EMBEDDING)  # the checksum (or the nesting) stops it


def test_a_memory_manifest_reaches_only_its_own_folders(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _saved(outside)
    memory = MemoryStore(EMBEDDING)
    asyncio.run(memory.add_memories_batch("ana", ["likes tea"], ids=["m1"]))
    folder = tmp_path / "memory"
    memory.save(folder)
    manifest = json.loads((folder / "memory.json").read_text())
    for name in ("../../outside", str(outside), "../outside"):  # version 1: a folder per user
        (folder / "memory.json").write_text(
            json.dumps({**manifest, "version": 1, "users": {"ana": name}})
        )
        with pytest.raises(IndexLoadError, match="not the folder a save makes"):
            MemoryStore.load(folder, EMBEDDING)
    # version 2: one store, whose every id must name its user
    memory.save(folder)
    store = FaissStore.load(folder / "store", EMBEDDING)
    store.add_texts(["nobody's"], ids=["no user"])
    store.save(folder / "store")
    with pytest.raises(IndexLoadError, match="names no user"):
        MemoryStore.load(folder, EMBEDDING)
    for field, value in (("metric", "dot"), ("version", 99)):
        memory.save(folder)
        manifest = json.loads((folder / "memory.json").read_text())
        manifest[field] = value
        (folder / "memory.json").write_text(json.dumps(manifest))
        with pytest.raises(IndexLoadError, match=field):
            MemoryStore.load(folder, EMBEDDING)


def test_leftovers_of_interrupted_saves_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    _saved(folder)
    dead = tmp_path / ".idx.tmp-999999999-abc123"  # a pid no process has
    old_style = tmp_path / ".idx.k2j4h5g6"
    alive = tmp_path / f".idx.tmp-{os.getppid()}-zzz"  # a running process may be saving
    for leftover in (dead, old_style, alive):
        leftover.mkdir()
        (leftover / "index.faiss").write_bytes(b"x" * 1000)
    FaissStore.load(folder, EMBEDDING)
    assert not dead.exists()
    assert not old_style.exists()
    assert alive.exists()
    dead.mkdir()
    _saved(folder)  # a save cleans up too
    assert not dead.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "idx"]


def test_fuzzed_folders_load_intact_or_fail_cleanly_fast_and_small() -> None:
    """300 random truncations, bit flips and field swaps of a saved FaissStore and MemoryStore,
    in a process of its own so that its peak memory can be read."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.fuzz_loaders", "300", "11"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["wrong"] == []
    assert sum(report["outcomes"].values()) == 300
    assert report["outcomes"]["IndexLoadError"] > 250  # checksums catch nearly every change
    assert report["slowest_s"] < 1.0
    assert report["peak_mb_over_baseline"] < 200
