"""Embedding a corpus through OpenAI's Batch API: half the price, results within 24 hours.

The Batch API is a job queue, not a request: a file of requests is uploaded, a batch created,
polled, and its output and error files downloaded. A run that dies in between must neither lose
what it paid for nor pay for it twice, so each step is written to a journal
(``batches.json``, replaced atomically) before the run goes on:

- ``planned``: the batch's requests (custom id -> document ids), with a key of its own;
- ``submitting``: written *before* the batch is created; the batch carries the key in its
  metadata, so a run that died between the create and the next write finds it again by listing
  the batches, instead of creating (and paying for) a second one;
- ``submitted``: the batch id; a restarted run polls it;
- ``stored``: its vectors are in the store (upserts by id: doing this twice is harmless).

A batch refused for the queue limit (``token_limit_exceeded``: the tokens of unfinished batches
per model are bounded) goes back to ``planned`` and waits until a running batch finishes; the
limit met is remembered so later batches are not sent into it. Requests that fail, or that an
expired batch left undone, are embedded through the online endpoint or reported by document
id (``on_failed``). Every vector is checked by the decoder the online path uses.

Server answers are untrusted: output files are read line by line (a batch of 50,000 inputs does
not sit in memory as JSON), each line's size is bounded, and the journal is checked field by
field when it is loaded.

Size: ~640 lines, one run's life (plan, submit, find, poll, read, recover) around one journal;
splitting the steps apart would spread the journal's write-before-acknowledge rule over
modules, and that rule is what makes the run safe to kill.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
from langchain_core.documents import Document

from rat_langchain._tokens import encode
from rat_langchain._vectors import MAX_DIMENSIONS, NATIVE_DIMENSIONS, decode_vectors
from rat_langchain.errors import BatchJobError, EmbeddingResponseError
from rat_langchain.guards.key import Key, tenant_of
from rat_langchain.index._atomic import atomic_file, folder_lock
from rat_langchain.index._files import parse_json, read_bytes, require

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from pydantic import SecretStr

    from rat_langchain.pool._clients import Clients


@runtime_checkable
class BatchEmbeddings(Protocol):
    """What the Batch API path needs of an embeddings object: ``PooledOpenAIEmbeddings`` is one
    (``pool.embeddings()``). A protocol, so the index package does not import the request path."""

    model: str
    dimensions: int | None
    context_length: int
    base_url: str | None
    api_key: SecretStr | None

    @property
    def pool(self) -> Clients: ...

    async def aembed_array(self, texts: Sequence[str]) -> np.ndarray: ...

    def prefilled(self, vectors: Mapping[str, np.ndarray]) -> AbstractContextManager[None]: ...


__all__ = [
    "PRICES_PER_MILLION",
    "BatchEmbeddings",
    "BatchReport",
    "BatchSettings",
    "batch_embed",
    "estimate_cost",
]

_log = logging.getLogger("rat_langchain.index")

# US$ per million input tokens, online; the Batch API costs half (openai.com/api/pricing).
PRICES_PER_MILLION = {
    "text-embedding-3-small": 0.02,
    "text-embedding-3-large": 0.13,
    "text-embedding-ada-002": 0.10,
}
_JOURNAL = "batches.json"
_MAX_JOURNAL_BYTES = 256 * 1024 * 1024
_JOURNAL_BASE = 1024 * 1024  # the journal's own JSON, whatever the corpus
_JOURNAL_PER_DOC = 300  # a document's request and job around its id, at most
_MAX_LINE_BYTES = 64 * 1024 * 1024  # one output line: 2048 vectors of 3072 floats in base64
_FLOAT_CHARS = 26  # one float as JSON text, at most ("-1.2345678901234567e-123, ")
_LINE_ENVELOPE = 64 * 1024  # a line's JSON around its vectors (ids, usage, headers)
_ERROR_LINE_BYTES = 64 * 1024  # one line of an error file


@dataclass(frozen=True)
class _Bounds:
    """What one file from the server may hold: bytes per line, lines, bytes in all."""

    line: int
    lines: int
    total: int


_STATES = ("planned", "submitting", "submitted", "stored")


def estimate_cost(tokens: int, model: str, *, batch: bool) -> float | None:
    """US$ for ``tokens`` input tokens of ``model`` (None for a model without a listed price)."""
    price = PRICES_PER_MILLION.get(model)
    if price is None:
        return None
    return tokens / 1e6 * price * (0.5 if batch else 1.0)


@dataclass(frozen=True)
class BatchSettings:
    """How batches are sized and watched. The limits are OpenAI's, per batch: 50,000 requests,
    50,000 embedding inputs, 200 MB of input file (a little under it here: JSON is counted
    exactly, the margin is for the multipart framing). ``enqueued_tokens``: the organisation's
    queue limit per model when known (tokens of unfinished batches); None: found from the first
    refusal. Polls start at ``poll_s`` and double up to ``max_poll_s`` while nothing changes.
    ``on_failed``: requests that failed or expired are embedded through the online endpoint
    (``"online"``) or reported by document id (``"report"``)."""

    inputs_per_request: int = 500
    max_requests: int = 50_000
    max_inputs: int = 50_000
    max_file_bytes: int = 190 * 1024 * 1024
    enqueued_tokens: int | None = None
    poll_s: float = 5.0
    max_poll_s: float = 60.0
    on_failed: Literal["online", "report"] = "online"
    store_chunk: int = 2000  # documents upserted at once while an output file is read
    max_read_s: float = 3600.0  # reading one output or error file takes at most this long

    def __post_init__(self) -> None:
        for name in ("inputs_per_request", "max_requests", "max_inputs", "max_file_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"BatchSettings.{name} must be > 0, got {getattr(self, name)}")
        if self.inputs_per_request > 2048:
            raise ValueError("BatchSettings.inputs_per_request must be <= 2048 (the API's cap)")
        if not self.max_read_s > 0:
            raise ValueError(f"BatchSettings.max_read_s must be > 0, got {self.max_read_s}")
        if not 0 < self.poll_s <= self.max_poll_s:
            raise ValueError("BatchSettings: need 0 < poll_s <= max_poll_s")
        if self.on_failed not in ("online", "report"):
            raise ValueError(
                f"BatchSettings.on_failed must be 'online' or 'report', not {self.on_failed!r}"
            )


@dataclass
class BatchReport:
    """What a batch run did. ``requests`` counts the HTTP requests sent to the Files and Batch
    APIs (uploads, creates, polls, downloads); ``failed`` maps document id to reason."""

    batches_submitted: int = 0
    batches_resumed: int = 0
    queue_waits: int = 0
    requests: int = 0
    tokens: int = 0
    stored: int = 0
    embedded_online: int = 0
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class _Job:
    key: str
    requests: dict[str, list[str]]  # custom id -> document ids, in input order
    tokens: int
    state: str = "planned"
    file_id: str | None = None
    batch_id: str | None = None

    def doc_ids(self) -> list[str]:
        return [d for ids in self.requests.values() for d in ids]


def _journal_bound(documents: Mapping[str, Any]) -> int:
    """The most bytes a journal of a run over ``documents`` can hold: each document in at most
    one unfinished job (``save`` writes no stored job), its id as JSON (12 bytes a character at
    worst: a ``\\ud83d\\ude00`` pair) in one request, a request and a job's fields around it,
    four times over (journals written before stored jobs were dropped held a few runs' jobs).
    A tampered journal of 40 MiB beside a corpus of 10,000 short ids cost 1 GB and 4.7 s before
    it was refused; now its size alone refuses it."""
    per_corpus = sum(12 * len(doc_id) + _JOURNAL_PER_DOC for doc_id in documents)
    return min(_MAX_JOURNAL_BYTES, _JOURNAL_BASE + 4 * per_corpus)


class _Journal:
    """The jobs of one index folder that a rerun must resume, saved atomically after every
    change. A stored job is not written: its vectors are in the store, which is saved (the
    run's checkpoint) before the job is marked stored, so the journal's size follows the part
    of the corpus still in flight."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.jobs: list[_Job] = []

    def load(self, max_bytes: int = _MAX_JOURNAL_BYTES) -> None:
        """Read the jobs (``max_bytes``: see ``_journal_bound``)."""
        path = self.folder / _JOURNAL
        if not path.exists():
            return
        data = parse_json(read_bytes(self.folder, _JOURNAL, max_bytes=max_bytes), path)
        require(isinstance(data, dict) and isinstance(data.get("jobs"), list), path, "no jobs")
        for n, raw in enumerate(data["jobs"]):
            where = f"job {n}"
            require(isinstance(raw, dict), path, f"{where} is not an object")
            requests = raw.get("requests")
            require(
                isinstance(requests, dict)
                and all(
                    isinstance(k, str)
                    and isinstance(v, list)
                    and all(isinstance(d, str) for d in v)
                    for k, v in requests.items()
                ),
                path,
                f"{where}: requests must map custom ids to lists of document ids",
            )
            state = raw.get("state")
            require(state in _STATES, path, f"{where}: unknown state {state!r}")
            tokens = raw.get("tokens")
            require(type(tokens) is int and tokens >= 0, path, f"{where}: bad token count")
            for name in ("key", "file_id", "batch_id"):
                value = raw.get(name)
                require(
                    value is None or (isinstance(value, str) and len(value) < 256),
                    path,
                    f"{where}: bad {name}",
                )
            require(isinstance(raw.get("key"), str), path, f"{where}: no key")
            self.jobs.append(
                _Job(raw["key"], requests, tokens, state, raw.get("file_id"), raw.get("batch_id"))
            )

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = {"jobs": [job.__dict__ for job in self.jobs if job.state != "stored"]}
        atomic_file(self.folder / _JOURNAL, json.dumps(payload).encode())


StoreAdd = Callable[[list[Document], np.ndarray], Awaitable[None]]


async def batch_embed(
    embedding: BatchEmbeddings,
    documents: Mapping[str, Document],
    todo: Sequence[str],
    store_add: StoreAdd,
    folder: str | os.PathLike[str],
    settings: BatchSettings = BatchSettings(),
    *,
    tokens: Mapping[str, int] | None = None,
    checkpoint: Callable[[], Awaitable[None]] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    dimension: int | None = None,
) -> BatchReport:
    """Embed the documents ``todo`` names (ids of ``documents``, the whole corpus) through the
    Batch API and hand each chunk of results to ``store_add(documents, vectors)``.

    ``folder`` keeps the journal: run again with the same folder after a crash and submitted
    work is resumed, not sent again (documents of an unfinished batch are not planned twice).
    ``tokens``: each document's token count where the caller has counted them already.
    ``checkpoint`` runs after a batch's vectors were added and before the journal says so (a
    store that must be saved to keep them saves there). ``sleep`` is a parameter so tests need
    not wait for polls. ``dimension``: the size of the vectors the store holds already, the
    size every line is held to where the model's is not known (a deployment name): else the
    first answer would set it, and a store of one size would be handed another's."""
    run = _Run(
        embedding,
        documents,
        store_add,
        Path(folder),
        settings,
        sleep,
        checkpoint,
        tokens,
        store_dims=dimension,
    )
    try:
        with folder_lock(Path(folder), "batch indexing run"):
            await run.go(todo)
    except BlockingIOError as exc:
        raise BatchJobError(
            f"{exc}: two runs on one journal would submit, and pay for, the same batches; "
            "wait for the other run or give this one another folder"
        ) from None
    return run.report


class _Run:
    def __init__(
        self,
        embedding: BatchEmbeddings,
        documents: Mapping[str, Document],
        store_add: StoreAdd,
        folder: Path,
        settings: BatchSettings,
        sleep: Callable[[float], Awaitable[None]],
        checkpoint: Callable[[], Awaitable[None]] | None,
        counted: Mapping[str, int] | None = None,
        store_dims: int | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.counted = counted or {}  # token counts the caller made already
        self.embedding = embedding
        self.documents = documents
        self.store_add = store_add
        self.settings = settings
        self.sleep = sleep
        self.journal = _Journal(folder)
        self.report = BatchReport()
        self.queue_limit = settings.enqueued_tokens
        pool = embedding.pool
        key = embedding.api_key.get_secret_value() if embedding.api_key else None
        self.client = pool.async_client(base_url=embedding.base_url, api_key=key, max_retries=0)
        self.guard = pool.guards.guard(
            Key(str(self.client.base_url).rstrip("/"), "batch-api", tenant_of(self.client.api_key))
        )
        self.dims = embedding.dimensions or NATIVE_DIMENSIONS.get(embedding.model)
        # the store's size, where the model's is unknown: each line is held to it (the files'
        # bounds are not: a line of another size is then one failed request, not a damaged file)
        self.store_dims = store_dims

    @property
    def held_to(self) -> int | None:
        """The size every vector must have: the model's (known, asked for, or set by the first
        answer), else the store's; None until either is known."""
        return self.dims or self.store_dims

    async def call(self, attempt: Callable[[], Awaitable[Any]]) -> Any:
        """One Files/Batch API request, under the pool's retries, breaker and limiter."""
        self.report.requests += 1
        return await self.guard.run(attempt)

    # -- planning --------------------------------------------------------------------------------

    async def go(self, todo: Sequence[str]) -> None:
        self.journal.load(_journal_bound(self.documents))
        unfinished = [job for job in self.journal.jobs if job.state != "stored"]
        known = {d for job in unfinished for d in job.doc_ids()}
        for job in unfinished:
            missing = [d for d in job.doc_ids() if d not in self.documents]
            if missing:
                raise BatchJobError(
                    f"the journal in {self.journal.folder} holds batch {job.key} for documents "
                    f"that are not in this corpus (e.g. {missing[0]!r}); index the same corpus "
                    "to resume it, or move the folder away to start over"
                )
            if job.state in ("submitting", "submitted"):
                self.report.batches_resumed += 1
        self.plan([d for d in todo if d not in known])
        self.journal.save()
        await self.drive()

    def plan(self, ids: Sequence[str]) -> None:
        s = self.settings
        job_requests: dict[str, list[str]] = {}
        request: list[str] = []
        inputs = tokens = size = 0
        job_tokens = 0

        def close_request() -> None:
            nonlocal request
            if request:
                job_requests[f"r{len(job_requests)}"] = request
                request = []

        def close_job() -> None:
            nonlocal job_requests, inputs, size, job_tokens
            close_request()
            if job_requests:
                self.journal.jobs.append(_Job(self.key(job_requests), job_requests, job_tokens))
            job_requests, inputs, size, job_tokens = {}, 0, 0, 0

        for doc_id in ids:
            text = self.documents[doc_id].page_content
            count = self.counted.get(doc_id)
            if count is None:
                count = len(encode(text, self.embedding.model))
            if count > self.embedding.context_length:
                self.report.failed[doc_id] = (
                    f"{count} tokens, over the model's context of {self.embedding.context_length}"
                )
                continue
            line_bytes = len(json.dumps(text)) + 8
            queue = self.queue_limit
            if (
                inputs + 1 > s.max_inputs
                or len(job_requests) + 1 > s.max_requests
                or size + line_bytes + 512 > s.max_file_bytes
                or (queue is not None and job_tokens + count > queue)
            ):
                close_job()
            if len(request) >= s.inputs_per_request:
                close_request()
            request.append(doc_id)
            inputs += 1
            size += line_bytes + (256 if len(request) == 1 else 0)
            job_tokens += count
            tokens += count
        close_job()
        self.report.tokens += tokens

    def key(self, requests: Mapping[str, list[str]]) -> str:
        """A job's key: what it asks for (ids, texts, model, dimensions). A batch found by this
        key after a crash answers exactly these requests, not an older run's over other texts
        under the same ids."""
        digest = hashlib.sha256()
        head = [self.embedding.model, self.embedding.dimensions, sorted(requests.items())]
        digest.update(json.dumps(head).encode())
        for ids in requests.values():
            for doc_id in ids:
                digest.update(self.documents[doc_id].page_content.encode("utf-8", "surrogatepass"))
                digest.update(b"\0")
        return digest.hexdigest()[:24]

    def write_requests(self, job: _Job) -> Path:
        """The batch's JSONL request file, written line by line beside the journal (an input
        file can reach 190 MB: it is not built in memory)."""
        body: dict[str, Any] = {"model": self.embedding.model, "encoding_format": "base64"}
        if self.embedding.dimensions is not None:
            body["dimensions"] = self.embedding.dimensions
        self.journal.folder.mkdir(parents=True, exist_ok=True)
        path = self.journal.folder / f"{job.key}.jsonl"
        # 0600: it holds the corpus's texts (removed once uploaded, or when the upload fails)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        with os.fdopen(os.open(path, flags, 0o600), "w", encoding="utf-8") as handle:
            for n, (custom_id, ids) in enumerate(job.requests.items()):
                line = {
                    "custom_id": custom_id,
                    "method": "POST",
                    "url": "/v1/embeddings",
                    "body": {**body, "input": [self.documents[d].page_content for d in ids]},
                }
                handle.write(("\n" if n else "") + json.dumps(line))
        return path

    # -- submitting and polling --------------------------------------------------------------------

    async def drive(self) -> None:
        delay = self.settings.poll_s
        while True:
            pending = [j for j in self.journal.jobs if j.state != "stored"]
            if not pending:
                return
            changed = False
            for job in pending:
                if job.state == "submitted":
                    changed |= await self.check(job)
            for job in pending:
                if job.state in ("planned", "submitting") and self.fits(job):
                    changed |= await self.submit(job)
            if any(j.state != "stored" for j in self.journal.jobs):
                delay = (
                    self.settings.poll_s if changed else min(delay * 2, self.settings.max_poll_s)
                )
                await self.sleep(delay)

    def fits(self, job: _Job) -> bool:
        """Whether the queue limit (once met) leaves room for ``job`` beside running batches."""
        if self.queue_limit is None:
            return True
        running = self.running_tokens()
        return running == 0 or running + job.tokens <= self.queue_limit

    def running_tokens(self, besides: _Job | None = None) -> int:
        """Tokens of the batches submitted and not finished (``besides`` left out)."""
        return sum(
            j.tokens for j in self.journal.jobs if j.state == "submitted" and j is not besides
        )

    async def submit(self, job: _Job) -> bool:
        if job.state == "submitting":  # a run died around the create: find the batch it made
            found = await self.find(job.key)
            if found is not None:
                job.batch_id, job.state = found, "submitted"
                self.journal.save()
                return True
        if job.file_id is None:
            path = self.write_requests(job)

            async def upload() -> Any:
                # a file object is read in chunks by the multipart encoder (the SDK reads a path
                # whole into memory first); each chunk's read is a short local read
                with open(path, "rb") as handle:  # noqa: ASYNC230
                    return await self.client.files.create(
                        file=(f"rat-{job.key}.jsonl", handle), purpose="batch"
                    )

            try:
                uploaded = await self.call(upload)
            finally:
                path.unlink(missing_ok=True)  # a rerun writes it again
            job.file_id = uploaded.id
        job.state = "submitting"
        self.journal.save()  # before the create: a crash after it is found by the key
        batch = await self.call(
            lambda: self.client.batches.create(
                input_file_id=str(job.file_id),
                endpoint="/v1/embeddings",
                completion_window="24h",
                metadata={"rat_job": job.key},
            )
        )
        job.batch_id, job.state = batch.id, "submitted"
        self.journal.save()
        self.report.batches_submitted += 1
        _log.info("batch %s submitted: %d documents", batch.id, len(job.doc_ids()))
        if batch.status == "failed":
            await self.finished(job, batch)
        return True

    def split(self, job: _Job) -> None:
        """Replace ``job`` by two jobs of half its requests each (tokens shared by inputs)."""
        items = list(job.requests.items())
        half = len(items) // 2
        inputs = max(1, len(job.doc_ids()))
        index = self.journal.jobs.index(job)
        parts = []
        for n, chunk in enumerate((items[:half], items[half:])):
            requests = dict(chunk)
            share = sum(len(v) for v in requests.values())
            parts.append(_Job(f"{job.key}.{n}", requests, job.tokens * share // inputs))
        self.journal.jobs[index : index + 1] = parts

    async def find(self, key: str) -> str | None:
        """The batch created for ``key`` by an earlier run, if any (newest first)."""
        after: str | None = None
        for _ in range(100):  # 10,000 batches back at most

            async def page_after(after: str | None = after) -> Any:
                if after is None:
                    return await self.client.batches.list(limit=100)
                return await self.client.batches.list(limit=100, after=after)

            page = await self.call(page_after)
            for batch in page.data:
                if (batch.metadata or {}).get("rat_job") == key:
                    return str(batch.id)
            if not page.has_more or not page.data:
                return None
            after = page.data[-1].id
        return None

    async def check(self, job: _Job) -> bool:
        batch = await self.call(lambda: self.client.batches.retrieve(str(job.batch_id)))
        if batch.status not in ("completed", "failed", "expired", "cancelled"):
            return False
        await self.finished(job, batch)
        return True

    async def finished(self, job: _Job, batch: Any) -> None:
        codes = [e.code for e in (batch.errors.data or [])] if batch.errors else []
        if batch.status == "failed" and "token_limit_exceeded" in codes:
            # the queue is full: wait for running batches, then send this one again
            running = self.running_tokens(besides=job)
            self.report.queue_waits += 1
            if running > 0:  # wait for them: the limit is at most what runs plus this one
                limit = running + job.tokens - 1
                self.queue_limit = min(self.queue_limit or limit, limit)
                job.state, job.batch_id = "planned", None
                self.journal.save()
                _log.info("batch %s refused for the queue limit: waiting", batch.id)
                return
            self.queue_limit = min(self.queue_limit or job.tokens, max(1, job.tokens - 1))
            if len(job.requests) > 1:  # alone over the limit: two halves, each sent in turn
                self.split(job)
                self.journal.save()
                return
            over = "token_limit_exceeded: one request is over the queue limit"
            await self.recover(job, dict.fromkeys(job.requests, over))
            job.state = "stored"
            self.journal.save()
            return
        undone: dict[str, str] = {}
        done: set[str] = set()
        output_id, error_id = _file_id(batch.output_file_id), _file_id(batch.error_file_id)
        if output_id:
            done |= await self.read_output(job, output_id, undone)
        if error_id:
            await self.read_errors(job, error_id, undone)
        for custom_id in job.requests:
            if custom_id not in done and custom_id not in undone:
                undone[custom_id] = f"batch {batch.status}: request not run"
        await self.recover(job, undone)
        if self.checkpoint is not None:
            await self.checkpoint()
        job.state = "stored"
        self.journal.save()

    async def each_line(
        self,
        file_id: str,
        handle: Callable[[bytes], Awaitable[None]],
        bounds: _Bounds,
    ) -> None:
        """Download ``file_id`` and hand each line to ``handle`` as it arrives (a retried
        download starts over: ``handle`` must be idempotent). The server's file is untrusted:
        no line over ``bounds.line`` bytes (checked before it is parsed), no more than
        ``bounds.lines`` lines or ``bounds.total`` bytes, and no longer than ``max_read_s``
        (an endless file kept a run reading for ever); past any, ``BatchJobError``."""

        def over(what: str) -> BatchJobError:
            return BatchJobError(
                f"the Batch API's file {file_id} is over {what}: not read further (a batch's "
                "answers fit well within it; the file is damaged or not the batch's)"
            )

        async def download() -> None:
            lines = total = 0
            async with self.client.files.with_streaming_response.content(file_id) as response:
                pending = bytearray()  # the line being read: each chunk is scanned once
                async for chunk in response.iter_bytes():
                    total += len(chunk)
                    if total > bounds.total:
                        raise over(f"{bounds.total} bytes")
                    start = 0
                    while (end := chunk.find(b"\n", start)) != -1:
                        pending += chunk[start:end]
                        if len(pending) > bounds.line:
                            raise over(f"{bounds.line} bytes in one line")
                        if pending.strip():
                            lines += 1
                            if lines > bounds.lines:
                                raise over(f"{bounds.lines} lines")
                            await handle(bytes(pending))
                        pending.clear()
                        start = end + 1
                    pending += chunk[start:]
                    if len(pending) > bounds.line:
                        raise over(f"{bounds.line} bytes in one line")
                if pending.strip():
                    if lines + 1 > bounds.lines:
                        raise over(f"{bounds.lines} lines")
                    await handle(bytes(pending))

        try:
            async with asyncio.timeout(self.settings.max_read_s):
                await self.call(download)
        except TimeoutError:
            raise BatchJobError(
                f"reading the Batch API's file {file_id} took over {self.settings.max_read_s} s "
                "(BatchSettings.max_read_s): not read further"
            ) from None

    def bounds(self, job: _Job, *, errors: bool = False) -> _Bounds:
        """What a file of ``job``'s answers (``errors``: its error file) can hold at most: a
        line per request (twice over, for retried lines), each of its inputs' vectors as JSON
        floats (the server may ignore base64) with room for the envelope. One line of 64 MiB
        used to be parsed before it was checked, costing ~1.8 GB."""
        lines = 2 * len(job.requests) + 100
        if errors:
            return _Bounds(line=_ERROR_LINE_BYTES, lines=lines, total=lines * _ERROR_LINE_BYTES)
        dims = self.dims or MAX_DIMENSIONS
        widest = max((len(inputs) for inputs in job.requests.values()), default=1)
        inputs = sum(len(v) for v in job.requests.values())
        line = min(_MAX_LINE_BYTES, _LINE_ENVELOPE + widest * dims * _FLOAT_CHARS)
        total = lines * _LINE_ENVELOPE + 2 * inputs * dims * _FLOAT_CHARS
        return _Bounds(line=line, lines=lines, total=total)

    async def read_output(self, job: _Job, file_id: str, undone: dict[str, str]) -> set[str]:
        done: set[str] = set()
        docs: list[Document] = []
        rows: list[np.ndarray] = []

        async def handle(raw: bytes) -> None:
            nonlocal docs, rows
            custom_id, vectors, problem = self.parse(job, raw)
            if custom_id is None:
                return
            if custom_id in done:  # a file naming one request twice: the first answer stands
                _log.warning("an output line repeats a request already stored: skipped")
                return
            if problem is not None or vectors is None:
                undone[custom_id] = problem or "no vectors"
                return
            done.add(custom_id)
            undone.pop(custom_id, None)
            for doc_id, row in zip(job.requests[custom_id], vectors, strict=True):
                docs.append(self.documents[doc_id])
                rows.append(row)
            if len(docs) >= self.settings.store_chunk:
                chunk, chunk_rows, docs, rows = docs, rows, [], []
                await self.store(chunk, chunk_rows)

        await self.each_line(file_id, handle, self.bounds(job))
        if docs:
            await self.store(docs, rows)
        return done

    async def store(self, docs: list[Document], rows: list[np.ndarray]) -> None:
        await self.store_add(docs, np.stack(rows).astype(np.float32))
        self.report.stored += len(docs)

    def parse(self, job: _Job, raw: bytes) -> tuple[str | None, np.ndarray | None, str | None]:
        """(custom id, vectors, problem) of one output line; vectors checked as the
        online path checks them (one finite vector of the right size per input)."""
        try:
            record = json.loads(raw)
            custom_id = record["custom_id"]
        except (ValueError, KeyError, TypeError, RecursionError):  # deep nesting: the fuzz test
            _log.warning("an output line of a batch is not JSON with a custom_id: skipped")
            return None, None, None
        if not isinstance(custom_id, str) or custom_id not in job.requests:
            _log.warning("an output line names a request this batch does not hold: skipped")
            return None, None, None
        expected = len(job.requests[custom_id])
        try:
            response = record["response"]
            if response["status_code"] != 200:
                return custom_id, None, f"status {response['status_code']}"
            vectors = decode_vectors(response["body"], expected, self.held_to)
        except (KeyError, TypeError, AttributeError) as exc:
            return custom_id, None, f"malformed answer ({type(exc).__name__})"
        except EmbeddingResponseError as exc:  # MalformedResponseError is one too
            return custom_id, None, str(exc)
        if self.dims is None:  # a model of unknown size (a deployment name): the first
            self.dims = int(vectors.shape[1])  # answer sets it, and every other is held to it
        return custom_id, vectors, None

    async def read_errors(self, job: _Job, file_id: str, undone: dict[str, str]) -> None:
        async def handle(raw: bytes) -> None:
            try:
                record = json.loads(raw)
                custom_id = record["custom_id"]
                error = record.get("error") or {}
                response = record.get("response") or {}
                reason = (
                    error.get("code")
                    or error.get("message")
                    or f"status {response.get('status_code')}"
                )
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                return
            if isinstance(custom_id, str):
                undone[custom_id] = str(reason)[:200]

        await self.each_line(file_id, handle, self.bounds(job, errors=True))

    async def recover(self, job: _Job, undone: Mapping[str, str]) -> None:
        """Requests the batch did not answer well: embedded now, or reported by id."""
        ids = [d for custom_id in undone for d in job.requests.get(custom_id, [])]
        if not ids:
            return
        if self.settings.on_failed == "report":
            for custom_id, reason in undone.items():
                for doc_id in job.requests.get(custom_id, []):
                    self.report.failed[doc_id] = f"batch: {reason}"
            return
        docs = [self.documents[d] for d in ids]
        vectors = np.asarray(
            await self.embedding.aembed_array([d.page_content for d in docs]), dtype=np.float32
        )
        held_to = self.held_to  # the online answer is held to the lines' size
        if held_to is not None and vectors.shape[1] != held_to:
            for doc_id in ids:
                self.report.failed[doc_id] = (
                    f"online: {vectors.shape[1]} dimensions, expected {held_to}"
                )
            return
        await self.store_add(docs, vectors)
        self.report.embedded_online += len(docs)


_FILE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _file_id(value: object) -> str | None:
    """A file id the server named, if it is one: an id like ``..`` or ``a/b`` made the SDK
    raise a bare ``ValueError`` on every rerun (issue 21, item 20); such a file is not read,
    and its requests count as not run (embedded online or reported)."""
    if not value:
        return None
    if isinstance(value, str) and _FILE_ID.fullmatch(value):
        return value
    _log.warning("a batch names an output or error file id that is not an id: not read")
    return None
