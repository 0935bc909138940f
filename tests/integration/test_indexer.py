"""BatchIndexer and the index/search CLI: every document exactly once, even across a SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from rat_langchain import ClientPool, RatConfig
from rat_langchain.index.faiss_store import FaissStore, IndexLoadError
from rat_langchain.index.indexer import BatchIndexer, load_folder
from rat_langchain.sim import SimulatorProcess, SimulatorThread
from tests.conftest import API_KEY

FAKE = VectorStoreIntegrationTests.get_embeddings()


def _corpus(folder: Path, files: int, paragraphs: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        body = "\n\n".join(
            f"File {f} paragraph {p}: " + " ".join(f"w{f}_{p}_{i}" for i in range(60))
            for p in range(paragraphs)
        )
        (folder / f"doc{f:03}.md").write_text(body)


def test_load_folder_gives_stable_ids_and_skips_other_files(tmp_path: Path) -> None:
    _corpus(tmp_path / "docs", 2, 3)
    (tmp_path / "docs" / "image.png").write_bytes(b"\x89PNG")
    first = list(load_folder(tmp_path / "docs", chunk_size=300, chunk_overlap=0))
    second = list(load_folder(tmp_path / "docs", chunk_size=300, chunk_overlap=0))
    assert [d.id for d in first] == [d.id for d in second]
    assert len({d.id for d in first}) == len(first)
    assert {d.metadata["source"] for d in first} == {"doc000.md", "doc001.md"}


def test_rerun_adds_nothing_twice_and_failures_are_reported(tmp_path: Path) -> None:
    docs = [Document(page_content=f"text {i}", id=f"id{i}") for i in range(50)]
    out = tmp_path / "store"
    report = asyncio.run(BatchIndexer(FAKE, out=out, batch_size=7, progress=False).aindex(docs))
    assert (report.added, report.skipped) == (50, 0)
    again = asyncio.run(BatchIndexer(FAKE, out=out, progress=False).aindex(docs + docs[:5]))
    assert (again.added, again.skipped) == (0, 55)
    store = FaissStore.load(out, FAKE)
    assert len(store) == 50
    assert store._index.ntotal == 50


def test_rejected_documents_are_reported_by_id_not_dropped(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    sim.configure(invalid_marker="<<bad>>")
    pool = ClientPool(
        RatConfig.from_dict({"performance": {"rate_limiting": {"enabled": False}}}, env={})
    )
    emb = pool.embeddings(base_url=sim.base_url, api_key=API_KEY)
    docs = [
        Document(page_content=f"text {i}" + (" <<bad>>" if i == 13 else ""), id=f"d{i}")
        for i in range(40)
    ]
    report = asyncio.run(
        BatchIndexer(emb, out=tmp_path / "s", batch_size=20, progress=False).aindex(docs)
    )
    assert list(report.failed) == ["d13"]
    assert report.added == 39
    assert len(FaissStore.load(tmp_path / "s", emb)) == 39
    assert "d13" in (tmp_path / "s.failed.json").read_text()


def test_the_library_never_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = [Document(page_content=f"text {i}", id=f"d{i}") for i in range(30)]
    seen: list[int] = []
    indexer = BatchIndexer(
        FAKE,
        out=tmp_path / "s",
        batch_size=10,
        checkpoint_every_s=0,
        progress=False,
        on_checkpoint=lambda count, folder: seen.append(count),
    )
    report = asyncio.run(indexer.aindex(docs))
    assert report.added == 30
    assert seen[-1] == 30  # checkpoints reach whoever asked, not stdout
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_sigkill_half_way_then_resume_gives_every_document_once(tmp_path: Path) -> None:
    _corpus(tmp_path / "docs", 30, 8)
    expected = {d.id for d in load_folder(tmp_path / "docs")}
    out = tmp_path / "store"
    with SimulatorProcess(latency_ms=30) as sim:
        env = {**os.environ, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": sim.base_url}
        env["RAT_PERFORMANCE__RATE_LIMITING__ENABLED"] = "false"
        env["RAT_PERFORMANCE__BATCH_EMBEDDINGS__MAX_CONCURRENT_BATCHES"] = "1"
        cmd = [
            sys.executable,
            "-m",
            "rat_langchain",
            "index",
            str(tmp_path / "docs"),
            "--out",
            str(out),
        ]
        cmd += ["--batch-size", "20", "--checkpoint-every", "0"]
        proc = subprocess.Popen(
            [*cmd, "--verbose"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:  # wait for two checkpoints, then kill without warning
            if line.startswith("checkpoint:") and int(line.split()[1]) >= 40:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = FaissStore.load(out, FAKE)
        assert 0 < len(partial) < len(expected)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout
        assert f"{len(partial)} already there" in done.stdout
        store = FaissStore.load(out, FAKE)
        assert set(store._docs) == expected
        assert store._index.ntotal == len(expected)
        search = subprocess.run(
            [
                sys.executable,
                "-m",
                "rat_langchain",
                "search",
                str(out),
                "File 3 paragraph 2",
                "-k",
                "2",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert search.returncode == 0
        assert "doc003.md" in search.stdout.splitlines()[0]
    (out / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexLoadError):
        FaissStore.load(out, FAKE)


def test_5000_documents_under_faults_end_up_exactly_once(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    sim.configure(error_rate=0.10, reset_rate=0.05, seed=9)
    too_many = {"status": 429, "error_type": "requests", "headers": {"retry-after-ms": "10"}}
    sim.push(too_many, too_many, too_many, endpoint="embeddings")
    config = {
        "rate_limiting": {"enabled": False},
        "retries": {"initial_backoff_s": 0.01, "max_backoff_s": 0.05, "max_attempts": 8},
        "circuit_breaker": {"consecutive_failures": 50},
    }
    pool = ClientPool(RatConfig.from_dict({"performance": config}, env={}))
    emb = pool.embeddings(base_url=sim.base_url, api_key=API_KEY)
    docs = [Document(page_content=f"document number {i}", id=f"doc-{i}") for i in range(5000)]
    indexer = BatchIndexer(emb, out=tmp_path / "s", batch_size=500, progress=False)
    report = asyncio.run(indexer.aindex(docs))
    assert (report.added, report.failed) == (5000, {})
    store = FaissStore.load(tmp_path / "s", emb)
    assert set(store._docs) == {d.id for d in docs}
    assert store._index.ntotal == 5000
    stats = sim.stats()
    assert stats.count("embeddings", 429) == 3
    assert stats.count("embeddings", 500) + stats.faults.get("reset", 0) > 0
