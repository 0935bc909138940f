"""Embedding calls coalesced (issue 22): callers that would wait share requests, each gets its
own vectors back, one caller's bad text or cancellation touches no other caller."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import numpy as np
import openai
import pytest

from rat_langchain.guards.engine import Guard
from rat_langchain.guards.key import Key
from rat_langchain.guards.limiter import RateLimiter
from rat_langchain.pool._coalesce import Coalescer
from tests.support.openai_errors import status_error

KEY = Key("http://sim/v1", "text-embedding-3-small")


def _vector(text: str) -> np.ndarray:
    return np.array([hash(text) % 1000, len(text)], dtype=np.float32)


class _Server:
    """A fake embeddings endpoint: one request at a time (``max_concurrency=1`` in the
    limiter makes everyone else wait, which is when texts merge), answers after a few loop
    turns, a 400 for any request holding a text with "BAD"."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.requests: list[list[str]] = []
        self.rng = rng or random.Random(0)
        self.hold = False  # each request waits until the test opens its gate
        self.gates: list[asyncio.Event] = []
        self._arrived = asyncio.Condition()

    async def sent(self, count: int) -> None:
        """Until ``count`` requests have arrived (an event, not a poll)."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)

    async def send_rows(self, texts: list[str]) -> tuple[np.ndarray, Any]:
        self.requests.append(list(texts))
        async with self._arrived:
            self._arrived.notify_all()
        if self.hold:
            gate = asyncio.Event()
            self.gates.append(gate)
            await gate.wait()
        for _ in range(self.rng.randrange(4)):
            await asyncio.sleep(0)
        if any("BAD" in text for text in texts):
            raise status_error(400, body={"error": {"message": "bad input"}})
        return np.stack([_vector(text) for text in texts]), {}


def _coalescer(server: _Server, concurrency: int = 1) -> Coalescer:
    limiter = RateLimiter(None, None, max_concurrency=concurrency)
    return Coalescer(Guard(KEY, limiter=limiter), server.send_rows, lambda exc: "rejected")


async def _embed(coalescer: Coalescer, texts: list[str]) -> list[Any]:
    return await coalescer.embed(texts, [len(t) for t in texts], max_texts=100, max_tokens=10**6)


async def test_a_lone_caller_sends_its_own_request_at_once() -> None:
    server = _Server()
    coalescer = _coalescer(server)
    out = await _embed(coalescer, ["one", "two"])
    assert server.requests == [["one", "two"]]
    assert all(np.array_equal(v, _vector(t)) for v, t in zip(out, ["one", "two"], strict=True))


async def test_callers_that_wait_share_requests() -> None:
    """200 queries, one request at a time: the first goes alone, the 199 queued behind it
    leave together (100 a request), not as 199 more requests."""
    server = _Server()
    coalescer = _coalescer(server)
    texts = [f"query {i}" for i in range(200)]
    outs = await asyncio.gather(*(_embed(coalescer, [t]) for t in texts))
    assert len(server.requests) <= 4
    for text, out in zip(texts, outs, strict=True):
        assert np.array_equal(out[0], _vector(text))


@pytest.mark.parametrize("seed", range(30))
async def test_results_return_to_the_right_callers_over_random_interleavings(seed: int) -> None:
    """Random callers (1-5 texts, repeats across callers), random answer delays, some
    callers cancelled at random points: every caller left gets exactly its own vectors."""
    rng = random.Random(seed)
    server = _Server(rng)
    coalescer = _coalescer(server, concurrency=rng.choice([1, 2, 3]))
    callers = [[f"t{rng.randrange(40)}" for _ in range(rng.randint(1, 5))] for _ in range(40)]
    tasks = [asyncio.ensure_future(_embed(coalescer, texts)) for texts in callers]
    doomed = set(rng.sample(range(40), 8))
    for _ in range(rng.randrange(6)):
        await asyncio.sleep(0)
    for i in doomed:
        tasks[i].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, (texts, result) in enumerate(zip(callers, results, strict=True)):
        if isinstance(result, asyncio.CancelledError):
            assert i in doomed
            continue
        assert not isinstance(result, BaseException), result
        assert [v.tolist() for v in result] == [_vector(t).tolist() for t in texts]
    assert not coalescer._pending  # nothing left behind


async def test_one_callers_bad_text_fails_only_that_text() -> None:
    server = _Server()
    coalescer = _coalescer(server)
    first = asyncio.ensure_future(_embed(coalescer, ["warm"]))  # holds the one slot
    await asyncio.sleep(0)
    outs = await asyncio.gather(
        _embed(coalescer, ["good one"]), _embed(coalescer, ["a BAD one", "fine"])
    )
    await first
    assert np.array_equal(outs[0][0], _vector("good one"))
    assert outs[1][0] == "rejected"
    assert np.array_equal(outs[1][1], _vector("fine"))
    assert any(len(r) > 1 and "good one" in r for r in server.requests)  # they were merged


async def test_a_cancelled_caller_cancels_nothing_else() -> None:
    """A's request carries B's text; A is cancelled mid-request: B's text goes back to the
    queue and B still gets its vector."""
    server = _Server()
    server.hold = True
    coalescer = _coalescer(server, concurrency=1)
    blocker = asyncio.ensure_future(_embed(coalescer, ["first"]))  # in flight, held
    await server.sent(1)
    a = asyncio.ensure_future(_embed(coalescer, ["from a"]))
    b = asyncio.ensure_future(_embed(coalescer, ["from b"]))
    for _ in range(5):
        await asyncio.sleep(0)
    server.gates[0].set()
    await blocker
    await server.sent(2)  # a's (or b's) request, carrying both, held
    assert sorted(server.requests[1]) == ["from a", "from b"]
    carrier, other = (a, b) if server.requests[1][0] == "from a" else (b, a)
    carrier.cancel()
    server.hold = False  # the text sent again goes through
    out = await asyncio.wait_for(other, 5)
    assert np.array_equal(out[0], _vector(server.requests[-1][0]))
    assert len(server.requests) == 3
    with pytest.raises(asyncio.CancelledError):
        await carrier


async def test_a_request_that_fails_fails_every_caller_it_carried() -> None:
    async def broken(texts: list[str]) -> tuple[np.ndarray, Any]:
        raise status_error(401)

    coalescer = Coalescer(Guard(KEY), broken, lambda exc: "rejected")
    with pytest.raises(openai.AuthenticationError):
        await _embed(coalescer, ["x"])
