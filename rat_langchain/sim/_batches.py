"""OpenAI's Files and Batch APIs, played for ``/v1/embeddings``, on the simulator's clock.

What a client of the Batch API must cope with, each a setting: a batch takes time
(``batch_completion_s``), some of its lines fail (``batch_line_failure_rate``), some batches
expire with part of their work undone (``batch_expire_rate``), and the tokens of unfinished
batches per model are bounded (``batch_enqueued_tokens``): a batch over the bound is created and
then fails with ``token_limit_exceeded``, as OpenAI's does. Limits per batch are OpenAI's:
50,000 requests, 50,000 embedding inputs, 200 MB of input file.

State advances when a batch is looked at (retrieve, list), from the clock: no background task.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_FILE_BYTES", "MAX_INPUTS", "MAX_REQUESTS", "BatchError", "Batches"]

MAX_REQUESTS = 50_000
MAX_INPUTS = 50_000
MAX_FILE_BYTES = 200 * 1024 * 1024
_ENDPOINT = "/v1/embeddings"
_TERMINAL = {"completed", "failed", "expired", "cancelled"}


class BatchError(Exception):
    """An HTTP error of the Files/Batch API: status, message, and the offending parameter."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


# (body of one line) -> (status code, response body); raises nothing
LineAnswer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]
# (body of one line) -> (tokens, inputs), or BatchError if the body is invalid
LineCost = Callable[[dict[str, Any]], tuple[int, int]]


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass
class _Batch:
    id: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: float
    model: str
    tokens: int
    lines: list[dict[str, Any]]
    expires: bool
    status: str = "validating"
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    times: dict[str, float] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        stamps = {f"{name}_at": int(at) for name, at in self.times.items()}
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": _ENDPOINT,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "in_progress_at": None,
            "expires_at": int(self.created_at + 24 * 3600),
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            **stamps,
            "request_counts": {
                "total": len(self.lines),
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }


class Batches:
    """The files and batches of one simulator (its config, clock and random draws)."""

    def __init__(
        self,
        clock: Callable[[], float],
        settings: Callable[[], Any],
        rng: Callable[[], random.Random],
        cost: LineCost,
        answer: LineAnswer,
    ) -> None:
        self._clock = clock
        self._settings = settings  # the simulator's current SimConfig
        self._rng = rng
        self._cost = cost
        self._answer = answer
        self._files: dict[str, _File] = {}
        self._batches: dict[str, _Batch] = {}
        self._ids = itertools.count(1)
        self.lines_answered = 0

    # -- files ---------------------------------------------------------------------------------

    def upload(self, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
        if purpose not in ("batch", "batch_output", "assistants", "fine-tune", "user_data"):
            raise BatchError(400, f"Invalid purpose {purpose!r}.", "purpose")
        if purpose == "batch" and len(data) > MAX_FILE_BYTES:
            raise BatchError(400, f"File is {len(data)} bytes, over {MAX_FILE_BYTES}.", "file")
        return self._store(filename, purpose, data).public()

    def _store(self, filename: str, purpose: str, data: bytes) -> _File:
        file = _File(f"file-sim{next(self._ids)}", filename, purpose, data, int(self._clock()))
        self._files[file.id] = file
        return file

    def file(self, file_id: str) -> dict[str, Any]:
        return self._file(file_id).public()

    def is_output(self, file_id: str) -> bool:
        """Whether ``file_id`` is a batch's output file."""
        file = self._files.get(file_id)
        return file is not None and file.filename.endswith("_output.jsonl")

    def content(self, file_id: str) -> bytes:
        return self._file(file_id).data

    def delete(self, file_id: str) -> dict[str, Any]:
        self._file(file_id)
        del self._files[file_id]
        return {"id": file_id, "object": "file", "deleted": True}

    def _file(self, file_id: str) -> _File:
        file = self._files.get(file_id)
        if file is None:
            raise BatchError(404, f"No such File object: {file_id}", "id")
        return file

    # -- batches -------------------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("endpoint") != _ENDPOINT:
            raise BatchError(400, f"This simulator batches {_ENDPOINT} only.", "endpoint")
        if body.get("completion_window") != "24h":
            raise BatchError(400, "completion_window must be '24h'.", "completion_window")
        file = self._file(str(body.get("input_file_id")))
        if file.purpose != "batch":
            raise BatchError(400, "The input file's purpose must be 'batch'.", "input_file_id")
        lines, model, tokens = self._parse(file.data)
        metadata = body.get("metadata")
        settings = self._settings()
        batch = _Batch(
            id=f"batch_sim{next(self._ids)}",
            input_file_id=file.id,
            completion_window="24h",
            metadata=metadata if isinstance(metadata, dict) else None,
            created_at=self._clock(),
            model=model,
            tokens=tokens,
            lines=lines,
            expires=self._rng().random() < settings.batch_expire_rate,
        )
        limit = settings.batch_enqueued_tokens
        queued = sum(
            b.tokens for b in self._batches.values() if b.model == model and not self._done(b)
        )
        self._batches[batch.id] = batch
        if limit is not None and queued + tokens > limit:
            batch.status = "failed"
            batch.times["failed"] = self._clock()
            batch.errors = [
                {
                    "code": "token_limit_exceeded",
                    "message": f"Enqueued token limit reached for {model} in organization "
                    f"org-sim. Limit: {limit:,} enqueued tokens. Please try again once some "
                    "in_progress batches have been completed.",
                    "param": None,
                    "line": None,
                }
            ]
        return batch.public()

    def _parse(self, data: bytes) -> tuple[list[dict[str, Any]], str, int]:
        """The lines of an input file, checked as OpenAI checks them before accepting a batch."""
        lines: list[dict[str, Any]] = []
        seen: set[str] = set()
        models: set[str] = set()
        tokens = inputs = 0
        for number, raw in enumerate(data.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError as exc:
                raise BatchError(400, f"line {number}: not JSON ({exc})", "input_file_id") from exc
            if not isinstance(line, dict) or not isinstance(line.get("body"), dict):
                raise BatchError(400, f"line {number}: no request body", "input_file_id")
            custom_id = line.get("custom_id")
            if not isinstance(custom_id, str) or custom_id in seen:
                raise BatchError(
                    400, f"line {number}: custom_id missing or repeated", "input_file_id"
                )
            if line.get("url") != _ENDPOINT or line.get("method") != "POST":
                raise BatchError(400, f"line {number}: must POST {_ENDPOINT}", "input_file_id")
            seen.add(custom_id)
            models.add(str(line["body"].get("model")))
            try:
                cost, count = self._cost(dict(line["body"]))
            except BatchError:
                cost, count = 0, 0  # an invalid body fails as its own line, later
            tokens += cost
            inputs += count
            lines.append(line)
        if not lines:
            raise BatchError(400, "The input file is empty.", "input_file_id")
        if len(models) > 1:
            raise BatchError(400, "A batch takes one model.", "input_file_id")
        if len(lines) > MAX_REQUESTS:
            raise BatchError(400, f"{len(lines)} requests, over {MAX_REQUESTS}.", "input_file_id")
        if inputs > MAX_INPUTS:
            raise BatchError(400, f"{inputs} embedding inputs, over {MAX_INPUTS}.", "input_file_id")
        return lines, models.pop(), tokens

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        batch = self._batch(batch_id)
        self._advance(batch)
        return batch.public()

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch = self._batch(batch_id)
        self._advance(batch)
        if batch.status not in _TERMINAL:
            batch.status = "cancelled"
            batch.times["cancelled"] = self._clock()
        return batch.public()

    def list(self, limit: int = 20, after: str | None = None) -> dict[str, Any]:
        newest_first = sorted(self._batches.values(), key=lambda b: b.created_at, reverse=True)
        if after is not None:
            ids = [b.id for b in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        page = newest_first[: max(1, min(limit, 100))]
        for batch in page:
            self._advance(batch)
        data = [b.public() for b in page]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(newest_first) > len(page),
        }

    def _batch(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise BatchError(404, f"No such Batch object: {batch_id}", "batch_id")
        return batch

    def _done(self, batch: _Batch) -> bool:
        self._advance(batch)
        return batch.status in _TERMINAL

    def _advance(self, batch: _Batch) -> None:
        """Move a batch on from the clock: in progress at once, finished after
        ``batch_completion_s`` (completed, or expired with part of the work)."""
        if batch.status in _TERMINAL:
            return
        now = self._clock()
        if batch.status == "validating":
            batch.status = "in_progress"
            batch.times["in_progress"] = batch.created_at
        if now - batch.created_at < self._settings().batch_completion_s:
            return
        self._finish(batch)

    def _finish(self, batch: _Batch) -> None:
        settings = self._settings()
        rng = self._rng()
        done = len(batch.lines) // 2 if batch.expires else len(batch.lines)
        output: list[bytes] = []
        errors: list[bytes] = []
        for i, line in enumerate(batch.lines):
            custom_id = line["custom_id"]
            request_id = f"batch_req_sim{next(self._ids)}"
            if i >= done:  # an expired batch leaves the rest undone
                record = {
                    "id": request_id,
                    "custom_id": custom_id,
                    "response": None,
                    "error": {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion "
                        "window expired.",
                    },
                }
                errors.append(json.dumps(record).encode())
                continue
            if rng.random() < settings.batch_line_failure_rate:
                status, body = (
                    500,
                    {"error": {"message": "The server had an error.", "type": "server_error"}},
                )
            else:
                asked = dict(line["body"])
                if settings.batch_output_fault == "mixed_sizes" and i % 2:
                    asked["dimensions"] = int(asked.get("dimensions") or 8) - 1
                status, body = self._answer(asked)
            self.lines_answered += 1
            record = {
                "id": request_id,
                "custom_id": custom_id,
                "response": {"status_code": status, "request_id": request_id, "body": body},
                "error": None,
            }
            (output if status == 200 else errors).append(json.dumps(record).encode())
            if status == 200 and settings.batch_output_fault == "duplicate_lines":
                output.append(json.dumps(record).encode())
        batch.completed = len(output)
        batch.failed = len(errors)
        if output and settings.batch_output_fault == "huge_line":  # 2,000,000 floats in a line
            record = json.loads(output[0])
            record["response"]["body"]["data"][0]["embedding"] = [0.5] * 2_000_000
            output[0] = json.dumps(record).encode()
        if output and settings.batch_output_fault == "endless":  # far more lines than requests
            output = output + [output[0]] * (100 * len(batch.lines) + 1000)
        if output:
            name = f"{batch.id}_output.jsonl"
            batch.output_file_id = self._store(name, "batch_output", b"\n".join(output)).id
            if settings.batch_output_fault == "bad_file_id":
                batch.output_file_id = ".."
        if errors:
            name = f"{batch.id}_error.jsonl"
            batch.error_file_id = self._store(name, "batch_output", b"\n".join(errors)).id
        batch.status = "expired" if batch.expires else "completed"
        batch.times["finalizing"] = batch.times[batch.status] = self._clock()
