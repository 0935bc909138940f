"""BatchIndexer through OpenAI's Batch API (the simulator plays it), into FaissStore and into any
LangChain vector store: each document exactly once, nothing paid twice across a crash, failed
lines recovered, a full queue waited out."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore

from rat_langchain import BatchIndexer, ClientPool, RatConfig
from rat_langchain.errors import BatchJobError
from rat_langchain.index.batch_api import BatchSettings
from rat_langchain.index.faiss_store import FaissStore
from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY

FAST = BatchSettings(poll_s=0.01, max_poll_s=0.05, inputs_per_request=100)


def corpus(n: int) -> list[Document]:
    return [Document(page_content=f"document {i} on topic {i % 13}", id=f"d{i}") for i in range(n)]


@pytest.fixture
def pool(sim: SimulatorThread) -> Iterator[ClientPool]:
    sim.configure(batch_completion_s=0.0)
    config = RatConfig.from_dict(
        {"endpoint": {"base_url": sim.base_url, "api_key": API_KEY}}, env={}
    )
    with ClientPool(config) as pool:
        yield pool


async def test_a_batch_run_lands_each_document_once(
    sim: SimulatorThread, pool: ClientPool, tmp_path: Path
) -> None:
    docs = corpus(3000)
    settings = BatchSettings(poll_s=0.01, max_poll_s=0.05, max_inputs=1000)
    indexer = BatchIndexer(
        pool.embeddings(), out=tmp_path / "index", mode="batch", batch=settings, progress=False
    )
    report = await indexer.aindex(docs)
    assert report.mode == "batch"
    assert report.added == 3000
    assert report.batch is not None
    assert report.batch.batches_submitted == 3  # sized under max_inputs
    stats = sim.stats()
    assert stats.batch_inputs == 3000  # every document embedded once, through the Batch API
    assert stats.count("embeddings") == 0  # and none synchronously
    store = FaissStore.load(tmp_path / "index", pool.embeddings())
    assert len(store) == 3000
    assert {d.id for d in store.get_by_ids([f"d{i}" for i in range(3000)])} == {
        f"d{i}" for i in range(3000)
    }
    assert report.cost_batch is not None
    assert report.cost_online is not None
    assert report.cost_batch == pytest.approx(report.cost_online / 2)
    again = await BatchIndexer(
        pool.embeddings(), out=tmp_path / "index", mode="batch", batch=settings, progress=False
    ).aindex(docs)
    assert (again.added, again.skipped) == (0, 3000)
    assert sim.stats().batches_created == 3  # nothing sent again


async def test_any_vector_store_with_ids(
    sim: SimulatorThread, pool: ClientPool, tmp_path: Path
) -> None:
    embeddings = pool.embeddings()
    store = InMemoryVectorStore(embeddings)
    report = await BatchIndexer(
        embeddings, store=store, out=tmp_path / "state", mode="batch", batch=FAST, progress=False
    ).aindex(corpus(500))
    assert report.added == 500
    assert len(store.store) == 500
    hit = (await store.asimilarity_search("document 7 on topic 7", k=1))[0]
    assert hit.id == "d7"
    sync = InMemoryVectorStore(embeddings)
    await BatchIndexer(embeddings, store=sync, progress=False).aindex(corpus(500))
    assert sync.store["d7"]["vector"] == store.store["d7"]["vector"]  # same vectors either way
    with pytest.raises(TypeError, match="same PooledOpenAIEmbeddings"):
        await BatchIndexer(
            pool.embeddings(), store=InMemoryVectorStore(embeddings), out=tmp_path / "x",
            mode="batch", progress=False,
        ).aindex(corpus(3))  # fmt: skip


class _Crash(Exception):
    """The process dies while waiting for its batches."""


async def _crash(_seconds: float) -> None:
    raise _Crash


async def test_killed_after_submission_resumes_without_submitting_again(
    sim: SimulatorThread, pool: ClientPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rat_langchain.index.batch_api as batch_api

    docs = corpus(2000)
    sim.configure(batch_completion_s=3600.0)  # still running when the process dies
    settings = BatchSettings(poll_s=0.01, max_poll_s=0.05, max_inputs=1000)
    real = batch_api.batch_embed

    async def crashing(*args: Any, **kwargs: Any) -> Any:
        return await real(*args, **{**kwargs, "sleep": _crash})

    monkeypatch.setattr("rat_langchain.index.indexer.batch_embed", crashing)
    with pytest.raises(_Crash):
        await BatchIndexer(
            pool.embeddings(), out=tmp_path / "index", mode="batch", batch=settings, progress=False
        ).aindex(docs)
    assert sim.stats().batches_created == 2
    # the process died between creating the second batch and writing its id down
    journal = tmp_path / "index.batches" / "batches.json"
    data = json.loads(journal.read_text())
    data["jobs"][1].update(state="submitting", batch_id=None)
    journal.write_text(json.dumps(data))

    monkeypatch.setattr("rat_langchain.index.indexer.batch_embed", real)
    sim.configure(batch_completion_s=0.0)
    report = await BatchIndexer(
        pool.embeddings(), out=tmp_path / "index", mode="batch", batch=settings, progress=False
    ).aindex(docs)
    assert report.batch is not None
    assert report.batch.batches_submitted == 0  # found again (by its key), not created again
    assert report.batch.batches_resumed == 2
    assert sim.stats().batches_created == 2
    assert report.added == 2000
    assert sim.stats().batch_inputs == 2000


@pytest.mark.parametrize("on_failed", ["online", "report"])
async def test_failed_and_expired_lines_are_recovered_or_reported(
    sim: SimulatorThread, pool: ClientPool, tmp_path: Path, on_failed: str
) -> None:
    sim.configure(batch_line_failure_rate=0.3, batch_expire_rate=1.0, seed=5)
    settings = BatchSettings(
        poll_s=0.01, max_poll_s=0.05, inputs_per_request=10, on_failed=on_failed
    )  # type: ignore[arg-type]
    report = await BatchIndexer(
        pool.embeddings(), out=tmp_path / "index", mode="batch", batch=settings, progress=False
    ).aindex(corpus(400))
    assert report.batch is not None
    if on_failed == "online":
        assert report.added == 400
        assert not report.failed
        assert report.batch.embedded_online > 200  # half undone by the expiry, and 30 % of the rest
        assert sim.stats().count("embeddings", 200) > 0
    else:
        assert report.added + len(report.failed) == 400
        assert len(report.failed) > 200
        assert {reason.split(":")[0] for reason in report.failed.values()} == {"batch"}
        assert sim.stats().count("embeddings") == 0


async def test_a_full_queue_is_waited_out(
    sim: SimulatorThread, pool: ClientPool, tmp_path: Path
) -> None:
    """Each batch ~700 tokens, the queue holds 1000: the second waits for the first."""
    sim.configure(batch_completion_s=0.2, batch_enqueued_tokens=1000)
    settings = BatchSettings(poll_s=0.02, max_poll_s=0.05, max_inputs=100)
    report = await BatchIndexer(
        pool.embeddings(), out=tmp_path / "index", mode="batch", batch=settings, progress=False
    ).aindex(corpus(300))
    assert report.added == 300
    assert report.batch is not None
    assert report.batch.queue_waits >= 1
    assert sim.stats().batch_inputs == 300


async def test_auto_takes_the_batch_api_only_for_a_large_corpus(
    sim: SimulatorThread, pool: ClientPool, tmp_path: Path
) -> None:
    small = await BatchIndexer(
        pool.embeddings(), out=tmp_path / "a", mode="auto", batch=FAST, progress=False
    ).aindex(corpus(50))
    assert small.mode == "online"
    assert small.tokens is not None
    assert small.cost_batch is not None
    assert sim.stats().batches_created == 0
    large = await BatchIndexer(
        pool.embeddings(), out=tmp_path / "b", mode="auto", batch=FAST, progress=False,
        batch_threshold_tokens=100,
    ).aindex(corpus(50))  # fmt: skip
    assert large.mode == "batch"
    assert sim.stats().batches_created == 1


def test_a_killed_indexer_process_resumes_without_paying_twice(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    """The CLI in its own process, killed (SIGKILL: no cleanup) once its batch exists; a second
    process with the same --out polls that batch instead of creating another, and the store
    ends with every chunk once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    for i in range(40):
        (corpus_dir / f"note{i}.md").write_text(f"note {i} about topic {i % 5}\n" * 3)
    env = {
        **os.environ,
        "OPENAI_BASE_URL": sim.base_url,
        "OPENAI_API_KEY": API_KEY,
        "PYTHONPATH": str(root),
    }
    argv = [sys.executable, "-m", "rat_langchain", "index", str(corpus_dir)]
    argv += ["--out", str(tmp_path / "ix"), "--batch", "--poll", "0.05"]
    sim.configure(batch_completion_s=3600.0)  # still running when the process dies
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while sim.stats().batches_created < 1:  # the simulator's counter: the batch exists
        assert first.poll() is None, "the indexer ended before submitting"
        assert time.monotonic() < deadline, "no batch within 60 s"
        time.sleep(0.02)  # polling another process's progress through the counter
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    sim.configure(batch_completion_s=0.0)
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "batches: 0 submitted, 1 resumed" in second.stdout
    assert "indexed 40 new" in second.stdout
    assert sim.stats().batches_created == 1  # one batch, paid once
    store = FaissStore.load(tmp_path / "ix", OpenAIEmbeddingsStub())
    assert len(store) == 40


class OpenAIEmbeddingsStub:
    """Loading a FaissStore needs an embeddings object; nothing is embedded here."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise AssertionError("not called")

    def embed_query(self, text: str) -> list[float]:
        raise AssertionError("not called")


async def test_a_repeated_output_line_stores_its_request_once(
    sim: SimulatorThread, pool: ClientPool, tmp_path: Path
) -> None:
    """Issue 21, item 15: an output file naming a request twice escaped as a bare ValueError
    (the store refused the duplicate ids), and every rerun failed the same way."""
    sim.configure(batch_output_fault="duplicate_lines")
    report = await BatchIndexer(
        pool.embeddings(), out=tmp_path / "index", mode="batch", batch=FAST, progress=False
    ).aindex(corpus(250))
    assert report.added == 250
    assert not report.failed
    assert len(FaissStore.load(tmp_path / "index", pool.embeddings())) == 250


async def test_a_model_of_unknown_size_holds_every_line_to_the_first(
    sim: SimulatorThread, pool: ClientPool, tmp_path: Path
) -> None:
    """Item 16: with a deployment name (not in the size table) any size was stored and mixed
    sizes were a bare ValueError from numpy; now the first answer sets the size and a line of
    another size is a failed request, embedded online (the online path checks it too)."""
    sim.configure(batch_output_fault="mixed_sizes")
    report = await BatchIndexer(
        pool.embeddings(model="my-deployment"),
        out=tmp_path / "index",
        mode="batch",
        batch=FAST,
        progress=False,
    ).aindex(corpus(400))
    assert report.batch is not None
    assert report.added == 400
    assert report.batch.embedded_online > 0  # the lines one dimension short, done again
    store = FaissStore.load(tmp_path / "index", pool.embeddings(model="my-deployment"))
    assert len(store) == 400


async def test_an_output_file_id_that_is_not_an_id_is_not_read(
    sim: SimulatorThread, pool: ClientPool, tmp_path: Path
) -> None:
    """Item 20: an output_file_id of '..' escaped as the SDK's bare ValueError on every rerun;
    now the file is not read and its requests count as not run (embedded online here)."""
    sim.configure(batch_output_fault="bad_file_id")
    report = await BatchIndexer(
        pool.embeddings(), out=tmp_path / "index", mode="batch", batch=FAST, progress=False
    ).aindex(corpus(150))
    assert report.batch is not None
    assert report.added == 150
    assert report.batch.embedded_online == 150


@pytest.mark.parametrize(
    ("fault", "names"), [("huge_line", "bytes in one line"), ("endless", r"over \d+ (lines|bytes)")]
)
async def test_an_output_file_past_its_batchs_bounds_is_a_batch_job_error(
    sim: SimulatorThread, pool: ClientPool, tmp_path: Path, fault: str, names: str
) -> None:
    """Items 12 and 13: a line under the 64 MiB cap was parsed before it was checked (~1.8 GB
    for one line), and an output file that never ends kept the run reading for ever. A file
    is now held to what its batch can answer (a line per request, each request's vectors) and
    checked before any line is parsed."""
    sim.configure(batch_output_fault=fault)
    indexer = BatchIndexer(
        pool.embeddings(), out=tmp_path / "index", mode="batch", batch=FAST, progress=False
    )
    with pytest.raises(BatchJobError, match=names):
        await indexer.aindex(corpus(150))


async def test_an_output_file_that_stalls_is_read_no_longer_than_max_read_s(
    sim: SimulatorThread, pool: ClientPool, tmp_path: Path
) -> None:
    """Item 13, the slow half: a download that sends part of the file and then nothing (the
    connection open, under every size bound) kept the run waiting for ever; it is now read
    for at most ``BatchSettings.max_read_s``."""
    sim.configure(batch_output_fault="stalled")
    settings = dataclasses.replace(FAST, max_read_s=0.5)
    indexer = BatchIndexer(
        pool.embeddings(), out=tmp_path / "index", mode="batch", batch=settings, progress=False
    )
    with pytest.raises(BatchJobError, match=r"took over 0.5 s \(BatchSettings.max_read_s\)"):
        await indexer.aindex(corpus(150))


async def test_two_runs_on_one_folder_never_both_submit(
    sim: SimulatorThread, pool: ClientPool, tmp_path: Path
) -> None:
    """Item 14: two indexers started together on one folder both submitted, and paid for, the
    same batches. The journal folder is locked: the second run stops with BatchJobError."""
    runs = [
        BatchIndexer(
            pool.embeddings(), out=tmp_path / "index", mode="batch", batch=FAST, progress=False
        ).aindex(corpus(150))
        for _ in range(2)
    ]
    results = await asyncio.gather(*runs, return_exceptions=True)
    reports = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(e, BatchJobError) and "another" in str(e) for e in errors), errors
    submitted = sum(r.batch.batches_submitted for r in reports if r.batch is not None)
    assert sim.stats().batches_created == submitted > 0  # no batch paid for twice
    journal = tmp_path / "index.batches"
    assert all(p.stat().st_mode & 0o077 == 0 for p in journal.iterdir() if p.is_file())


async def test_a_model_of_unknown_size_is_held_to_the_stores_size(
    sim: SimulatorThread, pool: ClientPool, tmp_path: Path
) -> None:
    """Issue 32: for a deployment name the first answer set the size, whatever the store held
    (a store of 16 dimensions was handed 1536). Now the store's size binds every line; lines
    of another size are failed requests, and the online retry is held to it too."""
    from rat_langchain.index.batch_api import batch_embed

    docs = {d.id: d for d in corpus(50) if d.id is not None}
    stored: list[int] = []

    async def add(batch: list[Document], vectors: Any) -> None:
        stored.append(len(batch))

    report = await batch_embed(
        pool.embeddings(model="my-deployment"),
        docs,
        list(docs),
        add,
        tmp_path / "batches",
        FAST,
        dimension=16,  # the simulator answers 1536
    )
    assert not stored
    assert set(report.failed) == set(docs)
    assert all("1536 dimensions, expected 16" in why for why in report.failed.values())
    assert report.embedded_online == 0


def test_a_first_vector_of_unknown_size_is_bounded() -> None:
    """A model of unknown size: the first answer sets the size, so it is bounded
    (``MAX_DIMENSIONS``); a size asked for (``dimensions=``) is taken as asked."""
    from rat_langchain._vectors import MAX_DIMENSIONS, decode_vectors
    from rat_langchain.errors import EmbeddingResponseError

    huge = {"data": [{"index": 0, "embedding": [0.0] * (MAX_DIMENSIONS + 1)}]}
    with pytest.raises(EmbeddingResponseError, match="more than the 4096"):
        decode_vectors(huge, 1, None)
    assert decode_vectors(huge, 1, MAX_DIMENSIONS + 1).shape == (1, MAX_DIMENSIONS + 1)
