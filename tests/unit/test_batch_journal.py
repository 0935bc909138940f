"""The Batch API journal is a saved file like any other: read as untrusted, field by field."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rat_langchain.errors import IndexLoadError
from rat_langchain.index import batch_api
from rat_langchain.index.batch_api import _Job, _Journal, _journal_bound


def _write(folder: Path, payload: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "batches.json").write_text(json.dumps(payload))


def test_a_saved_journal_loads_back(tmp_path: Path) -> None:
    journal = _Journal(tmp_path)
    journal.load()  # none yet: nothing to resume
    assert journal.jobs == []
    job = {"key": "k", "requests": {"r0": ["a", "b"]}, "tokens": 9}
    _write(tmp_path, {"jobs": [{**job, "state": "submitted", "file_id": "f", "batch_id": "b1"}]})
    journal.load()
    assert [(j.key, j.batch_id, j.doc_ids()) for j in journal.jobs] == [("k", "b1", ["a", "b"])]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ("not json", "damaged"),
        ({"jobs": "x"}, "no jobs"),
        ({"jobs": [{"key": "k", "requests": {"r0": [1]}, "tokens": 1, "state": "planned"}]},
         "requests must map"),
        ({"jobs": [{"key": "k", "requests": {}, "tokens": 1, "state": "eaten"}]}, "unknown state"),
        ({"jobs": [{"key": "k", "requests": {}, "tokens": True, "state": "planned"}]},
         "bad token count"),
        ({"jobs": [{"key": "k", "requests": {}, "tokens": 1, "state": "planned",
                    "batch_id": "x" * 300}]}, "bad batch_id"),
    ],
)  # fmt: skip
def test_a_damaged_journal_is_an_index_load_error(
    tmp_path: Path, payload: object, problem: str
) -> None:
    if isinstance(payload, str):
        tmp_path.mkdir(exist_ok=True)
        (tmp_path / "batches.json").write_text(payload)
    else:
        _write(tmp_path, payload)
    with pytest.raises(IndexLoadError, match=problem):
        _Journal(tmp_path).load()


def test_a_journal_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    os.symlink("/dev/zero", tmp_path / "batches.json")
    with pytest.raises(IndexLoadError, match="not a regular file"):
        _Journal(tmp_path).load()


def test_output_lines_are_checked_as_the_synchronous_path_checks_vectors() -> None:
    """Each line of a batch's output: JSON naming a request of this batch, one finite vector of
    the expected size per input; anything else fails that request (or is skipped)."""
    import base64

    import numpy as np

    from rat_langchain.index.batch_api import _Job, _Run

    run = _Run.__new__(_Run)  # parse() needs only the expected size
    run.dims = 4
    job = _Job("k", {"r0": ["a", "b"]}, 2)

    def line(vectors: list[list[float]], custom_id: str = "r0", status: int = 200) -> bytes:
        data = [
            {"index": i, "embedding": base64.b64encode(np.array(v, "<f4").tobytes()).decode()}
            for i, v in enumerate(vectors)
        ]
        body = {"data": data}
        record = {"custom_id": custom_id, "response": {"status_code": status, "body": body}}
        return json.dumps(record).encode()

    custom_id, vectors, problem = run.parse(job, line([[1, 0, 0, 0], [0, 1, 0, 0]]))
    assert (custom_id, problem) == ("r0", None)
    assert vectors is not None
    assert vectors.shape == (2, 4)
    assert run.parse(job, b"not json") == (None, None, None)  # skipped
    assert run.parse(job, line([[1, 0, 0, 0]] * 2, custom_id="other"))[0] is None
    assert run.parse(job, line([[1, 0, 0, 0]]))[2] == "asked for 2 vectors, the server returned 1"
    assert run.parse(job, line([[1, 0, 0]] * 2))[2] == "vector 0 has 3 dimensions, expected 4"
    nan = run.parse(job, line([[float("nan"), 0, 0, 0]] * 2))[2]
    assert nan == "vector 0 contains NaN or infinite values"
    assert run.parse(job, line([[1, 0, 0, 0]] * 2, status=500))[2] == "status 500"
    garbage = [{"index": i, "embedding": "%%%"} for i in range(2)]
    response = {"status_code": 200, "body": {"data": garbage}}
    bad = json.dumps({"custom_id": "r0", "response": response}).encode()
    assert (run.parse(job, bad)[2] or "").startswith("vector 0 cannot be decoded")


def test_an_output_line_that_names_one_index_twice_stores_nothing() -> None:
    """Two rows both claiming index 0 (and none index 1): sorting by index used to store the
    second row's vector under the second document's id. The line now fails as a whole."""
    import base64

    import numpy as np

    from rat_langchain.index.batch_api import _Job, _Run

    run = _Run.__new__(_Run)
    run.dims = 2
    job = _Job("k", {"r0": ["a", "b"]}, 2)
    data = [
        {"index": 0, "embedding": base64.b64encode(np.array(v, "<f4").tobytes()).decode()}
        for v in ([1, 0], [0, 1])
    ]
    record = {"custom_id": "r0", "response": {"status_code": 200, "body": {"data": data}}}
    custom_id, vectors, problem = run.parse(job, json.dumps(record).encode())
    assert (custom_id, vectors) == ("r0", None)
    assert problem == "the server returned a bad or repeated index 0"
    data[1]["index"] = True  # a bool is not an index
    record = {"custom_id": "r0", "response": {"status_code": 200, "body": {"data": data}}}
    assert run.parse(job, json.dumps(record).encode())[2] == "the server returned a bad index True"


def test_stored_jobs_are_not_written(tmp_path: Path) -> None:
    """Item 17: every run's stored jobs stayed in the journal for ever, so its size followed
    the history, not the corpus, and no bound from the corpus could hold."""
    journal = _Journal(tmp_path)
    journal.jobs = [
        _Job("done", {"r0": ["a"]}, 1, state="stored"),
        _Job("open", {"r0": ["b"]}, 1, state="submitted", batch_id="b1"),
    ]
    journal.save()
    again = _Journal(tmp_path)
    again.load()
    assert [job.key for job in again.jobs] == ["open"]


def test_a_journal_larger_than_its_corpus_allows_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 17: a tampered 40 MiB journal beside 10,000 short ids cost 1 GB and 4.7 s before
    it was refused (the loader allowed 256 MB whatever the corpus)."""
    corpus = {f"doc-{i}": None for i in range(10_000)}
    bound = _journal_bound(corpus)
    assert bound < 40 * 1024 * 1024
    tmp_path.mkdir(exist_ok=True)
    with (tmp_path / "batches.json").open("wb") as handle:
        handle.truncate(40 * 1024 * 1024)

    def parsed(*_: object) -> object:
        raise AssertionError("parsed before its size was checked")

    monkeypatch.setattr(batch_api, "parse_json", parsed)
    with pytest.raises(IndexLoadError, match=f"more than {bound}"):
        _Journal(tmp_path).load(bound)


def test_the_largest_journal_a_corpus_can_need_fits_its_bound(tmp_path: Path) -> None:
    """One document per request and per job (the most framing a document can get), ids of
    astral characters (12 bytes each as JSON), every job unfinished."""
    corpus = {"\U0001f600" * 40 + str(i): None for i in range(2_000)}
    journal = _Journal(tmp_path)
    journal.jobs = [
        _Job("k" * 24, {f"r{i}": [doc_id]}, 10**9, "submitted", "file-" + "x" * 40, "batch_x" * 8)
        for i, doc_id in enumerate(corpus)
    ]
    journal.save()
    size = (tmp_path / "batches.json").stat().st_size
    assert size <= _journal_bound(corpus) / 4  # and room for a few old runs' stored jobs
    _Journal(tmp_path).load(_journal_bound(corpus))
