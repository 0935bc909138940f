"""What an embeddings answer must be, checked in one place for the online endpoint and the
Batch API's output files: one finite vector of the expected size per input, each input's
``index`` once.

Why one decoder: the two paths had a copy each, and the Batch API's sorted the rows by
``index`` without checking it, so an answer that named one index twice stored a vector under
another document's id. Both are untrusted server output.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

from rat_langchain.errors import EmbeddingResponseError, MalformedResponseError

__all__ = ["MAX_DIMENSIONS", "NATIVE_DIMENSIONS", "decode_vectors"]

# The size of each model's vectors when no ``dimensions`` is asked for (OpenAI's models page).
NATIVE_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
# The largest vector taken from a model of unknown size (a deployment name, a local model) when
# no ``dimensions`` was asked for: OpenAI's largest is 3072, open models' 4096. Why a bound: the
# first answer sets the size every later one is held to, and a server answering 10^6 floats a
# vector would cost the store (and the Batch API's file bounds) what it pleased.
MAX_DIMENSIONS = 4096


def decode_vectors(payload: Mapping[str, Any], count: int, expected: int | None) -> np.ndarray:
    """Vectors in input order, one row each, checked: one per input, finite, of the expected
    size. Decoded into one array with one finiteness check: per-vector numpy calls were a tenth
    of the client's CPU when indexing."""
    data = payload.get("data")
    if not isinstance(data, list) or len(data) != count:
        got = len(data) if isinstance(data, list) else "no"
        raise EmbeddingResponseError(f"asked for {count} vectors, the server returned {got}")
    rows: np.ndarray | None = None
    seen = bytearray(count)
    for item in data:
        if not isinstance(item, Mapping):
            raise MalformedResponseError("the server answered a vector item that is not an object")
        index = item.get("index")
        if isinstance(index, bool) or not isinstance(index, int):
            raise EmbeddingResponseError(f"the server returned a bad index {index!r}")
        if not 0 <= index < count or seen[index]:
            raise EmbeddingResponseError(f"the server returned a bad or repeated index {index!r}")
        seen[index] = 1
        raw = item.get("embedding")
        try:
            if isinstance(raw, str):
                vector = np.frombuffer(base64.b64decode(raw, validate=True), dtype="<f4")
            elif isinstance(raw, list):
                vector = np.asarray([np.nan if x is None else x for x in raw], dtype=np.float32)
            else:
                raise TypeError(f"an embedding of type {type(raw).__name__}")
        except (TypeError, ValueError) as exc:  # binascii.Error is a ValueError
            raise MalformedResponseError(f"vector {index} cannot be decoded: {exc}") from None
        size = vector.shape[0]
        if expected is not None and size != expected:
            raise EmbeddingResponseError(
                f"vector {index} has {size} dimensions, expected {expected}"
            )
        if expected is None and size > MAX_DIMENSIONS:
            raise EmbeddingResponseError(
                f"vector {index} has {size} dimensions, more than the {MAX_DIMENSIONS} taken "
                "from a model of unknown size (ask for dimensions= to take another size)"
            )
        if rows is None:
            rows = np.empty((count, size), dtype=np.float32)
        elif size != rows.shape[1]:
            raise EmbeddingResponseError(
                f"the server returned vectors of mixed sizes {sorted({size, rows.shape[1]})}"
            )
        rows[index] = vector
    assert rows is not None  # count >= 1: a batch is never empty
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        index = int(np.argmin(finite))
        raise EmbeddingResponseError(f"vector {index} contains NaN or infinite values")
    return rows
