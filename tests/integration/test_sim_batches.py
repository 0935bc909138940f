"""The simulator's Files and Batch APIs, through the openai SDK over a socket: what a Batch API
client must cope with (time, failed lines, expiry, queue limits) can be played offline."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import openai
import pytest

from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY

MODEL = "text-embedding-3-small"


def _client(sim: SimulatorThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key=API_KEY, max_retries=0)


def _line(custom_id: str, texts: list[str], **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": MODEL, "input": texts, "encoding_format": "base64", **body},
    }


def _submit(client: openai.OpenAI, lines: list[dict[str, Any]]) -> Any:
    data = "\n".join(json.dumps(line) for line in lines).encode()
    uploaded = client.files.create(file=("requests.jsonl", data), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
    )


def _records(client: openai.OpenAI, file_id: str | None) -> dict[str, Any]:
    if file_id is None:
        return {}
    text = client.files.content(file_id).content.decode()
    return {r["custom_id"]: r for r in map(json.loads, text.splitlines())}


def test_a_batch_embeds_like_the_endpoint_and_reports_bad_lines(sim: SimulatorThread) -> None:
    sim.configure(batch_completion_s=0.0)
    client = _client(sim)
    batch = _submit(
        client,
        [
            _line("a", ["alpha", "beta"]),
            _line("b", ["gamma"]),
            _line("bad", ["delta"], dimensions=-3),  # invalid: fails as its own line
        ],
    )
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    output = _records(client, done.output_file_id)
    vectors = output["a"]["response"]["body"]["data"]
    direct = client.embeddings.create(model=MODEL, input=["alpha"], encoding_format="base64")
    assert vectors[0]["embedding"] == direct.data[0].embedding  # same vector as the endpoint
    decoded = np.frombuffer(base64.b64decode(vectors[1]["embedding"]), dtype="<f4")
    assert decoded.shape == (1536,)
    errors = _records(client, done.error_file_id)
    assert errors["bad"]["response"]["status_code"] == 400
    assert sim.stats().batches_created == 1


def test_queue_limit_fails_a_batch_until_running_ones_finish(sim: SimulatorThread) -> None:
    sim.configure(batch_completion_s=3600.0, batch_enqueued_tokens=40)  # each batch: 25 tokens
    client = _client(sim)
    first = _submit(client, [_line("1", ["one two three four five"] * 5)])
    assert client.batches.retrieve(first.id).status == "in_progress"
    second = _submit(client, [_line("2", ["one two three four five"] * 5)])
    refused = client.batches.retrieve(second.id)
    assert refused.status == "failed"
    assert refused.errors is not None
    assert refused.errors.data is not None
    assert refused.errors.data[0].code == "token_limit_exceeded"
    sim.configure(batch_completion_s=0.0)  # the running batch finishes
    assert client.batches.retrieve(first.id).status == "completed"
    third = _submit(client, [_line("3", ["one two three four five"] * 5)])
    assert client.batches.retrieve(third.id).status == "completed"


def test_expired_batches_cancel_and_list(sim: SimulatorThread) -> None:
    sim.configure(batch_completion_s=0.0, batch_expire_rate=1.0)
    client = _client(sim)
    batch = _submit(client, [_line(str(i), [f"text {i}"]) for i in range(6)])
    expired = client.batches.retrieve(batch.id)
    assert expired.status == "expired"
    assert len(_records(client, expired.output_file_id)) == 3
    undone = _records(client, expired.error_file_id)
    assert {r["error"]["code"] for r in undone.values()} == {"batch_expired"}
    sim.configure(batch_completion_s=3600.0, batch_expire_rate=0.0)
    running = _submit(client, [_line("x", ["x"])])
    assert client.batches.cancel(running.id).status == "cancelled"
    listed = client.batches.list(limit=10)
    assert [b.id for b in listed.data][:2] == [running.id, batch.id]  # newest first


def test_failed_lines_and_batch_limits(sim: SimulatorThread) -> None:
    sim.configure(batch_completion_s=0.0, batch_line_failure_rate=1.0, seed=3)
    client = _client(sim)
    batch = _submit(client, [_line("only", ["a"])])
    done = client.batches.retrieve(batch.id)
    assert done.output_file_id is None
    assert _records(client, done.error_file_id)["only"]["response"]["status_code"] == 500
    sim.configure(batch_line_failure_rate=0.0)
    too_many = [_line(str(i), ["a"] * 2048) for i in range(25)]  # 51,200 inputs
    with pytest.raises(openai.BadRequestError, match="50000"):
        _submit(client, too_many)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")
