"""Embedding requests coalesced: concurrent callers' texts that would wait anyway share requests.

Why: a served RAG app embeds one query per user request. Each ``aembed_query`` was its own
request, so the app's embedding rate was bound by the requests-per-minute limit (1000 queries
against 5000 RPM took 14 s) while the tokens-per-minute limit allowed thousands of queries a
second. Here every caller's texts join one queue per (endpoint, model, tenant, dimensions); a
request is formed only when it is *admitted* (by the breaker, the learned window, the limiter and
the concurrency bound) and it takes everything queued by then, up to the request's caps, its
own caller's texts first. So nothing waits that would not have waited (a lone caller's request
is admitted at once and carries its own texts), and callers that queue behind the limiter leave
in one request. A caller whose texts another request took stops waiting for admission (its
place in the limiter's queue is given back), so merged requests cost the limiter one request.

Each caller keeps its own fate:

- errors: a request's failure is the failure of every caller it carried (they asked the same
  server the same thing); a 400 is split in halves until the bad input is found, so one caller's
  bad text fails only that text, reported to its caller;
- cancellation and deadlines: a caller that goes away takes its queued texts with it; if its
  request was carrying other callers' texts, those go back to the head of the queue and their
  callers send them again. Nothing another caller waits for is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import openai

from rat_langchain.guards.engine import Guard

__all__ = ["Coalescer", "SendRows"]

# one request's texts -> their vectors and the answer's headers (raises as the SDK does)
SendRows = Callable[[list[str]], Awaitable[tuple[np.ndarray, Any]]]

_PENDING, _TAKEN, _DONE = "pending", "taken", "done"


@dataclass(eq=False)
class _Item:
    text: str
    tokens: int
    owner: _Owner
    state: str = _PENDING
    vector: np.ndarray | None = None
    problem: str | None = None  # the server rejected this text (a 400 found by halving)
    error: BaseException | None = None  # the request carrying it failed


@dataclass(eq=False)
class _Owner:
    """One caller: woken whenever one of its texts changes hands or gets its answer."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)


class _Sender:
    """One request in the making: admitted, it claims its texts (once, on its first attempt;
    retries send the same ones)."""

    def __init__(self) -> None:
        self.items: list[_Item] = []
        self.claimed = False


class Coalescer:
    """The queue of one (endpoint, model, tenant, dimensions); see the module's docstring."""

    def __init__(
        self, guard: Guard, send_rows: SendRows, reason: Callable[[openai.BadRequestError], str]
    ) -> None:
        self.guard = guard
        self._send_rows = send_rows
        self._reason = reason
        self._pending: deque[_Item] = deque()
        self.requests = 0  # sent (attempts excluded): what merging saved is visible here

    async def embed(
        self, texts: Sequence[str], tokens: Sequence[int], *, max_texts: int, max_tokens: int
    ) -> list[np.ndarray | str]:
        """Each text's vector, or the server's reason for rejecting that text (a str)."""
        owner = _Owner()
        items = [_Item(text, cost, owner) for text, cost in zip(texts, tokens, strict=True)]
        self._pending.extend(items)
        sender: asyncio.Task[None] | None = None
        request = _Sender()
        try:
            while not all(item.state == _DONE for item in items):
                owner.changed.clear()
                if sender is None:
                    mine = [item for item in items if item.state == _PENDING]
                    if not mine:
                        await owner.changed.wait()  # ours are in another request: wait for it
                        continue
                    request = _Sender()
                    estimate = sum(item.tokens for item in mine)
                    sender = asyncio.ensure_future(
                        self._send(request, owner, max_texts, max_tokens, estimate)
                    )
                if sender.done():
                    sender.result()  # a failure before it carried anything is this caller's
                    sender = None
                    continue
                if not request.claimed and not any(item.state == _PENDING for item in items):
                    # another request took every text of ours: leave the limiter's queue
                    sender.cancel()
                    await asyncio.gather(sender, return_exceptions=True)
                    sender = None
                    continue
                waiter = asyncio.ensure_future(owner.changed.wait())
                try:
                    await asyncio.wait({sender, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
            if sender is not None and request.claimed:  # ours are answered; it carries others'
                await asyncio.gather(sender, return_exceptions=True)
        finally:
            if sender is not None and not sender.done():
                sender.cancel()  # its other callers' texts go back to the queue
                await asyncio.gather(sender, return_exceptions=True)
            for item in items:
                if item.state == _PENDING:
                    with contextlib.suppress(ValueError):
                        self._pending.remove(item)
        out: list[np.ndarray | str] = []
        for item in items:
            if item.error is not None:
                raise item.error
            assert item.problem is not None or item.vector is not None
            out.append(item.problem if item.problem is not None else item.vector)  # type: ignore[arg-type]
        return out

    # -- one request ---------------------------------------------------------------------------

    def _claim(self, state: _Sender, owner: _Owner, max_texts: int, max_tokens: int) -> None:
        """Take the queued texts this request carries: the admitted caller's own first, then
        the others' in order, up to ``max_texts`` and ``max_tokens``."""
        state.claimed = True
        queued = sorted(self._pending, key=lambda item: item.owner is not owner)
        tokens = 0
        for item in queued:
            if len(state.items) >= max_texts or (state.items and tokens + item.tokens > max_tokens):
                break
            state.items.append(item)
            tokens += item.tokens
        taken = set(map(id, state.items))
        self._pending = deque(item for item in self._pending if id(item) not in taken)
        for item in state.items:
            item.state = _TAKEN
            item.owner.changed.set()

    async def _send(
        self, state: _Sender, owner: _Owner, max_texts: int, max_tokens: int, estimate: int
    ) -> None:
        try:
            await self._request(state, None, owner, max_texts, max_tokens, estimate)
        except asyncio.CancelledError:
            undone = [item for item in state.items if item.state == _TAKEN]
            self._pending.extendleft(reversed(undone))  # back to the head, in order
            for item in undone:
                item.state = _PENDING
                item.owner.changed.set()
            raise
        except Exception as exc:  # the request failed: so does every caller it carried
            if not state.items:
                raise  # it carried nothing: its own caller's failure (a deadline, a breaker)
            for item in state.items:
                if item.state == _TAKEN:
                    self._finish(item, error=exc)

    async def _request(
        self,
        state: _Sender,
        items: list[_Item] | None,
        owner: _Owner,
        max_texts: int,
        max_tokens: int,
        estimate: int,
    ) -> None:
        """Send ``items`` (None: what the admitted request claims) under the guard; a 400
        splits them in halves until the rejected text is found."""
        chosen: list[_Item] = items or []

        async def attempt() -> tuple[np.ndarray, Any] | None:
            nonlocal chosen
            if items is None and not state.claimed:
                self._claim(state, owner, max_texts, max_tokens)
                chosen = state.items
            if not chosen:
                return None  # admitted in the instant another request took ours: nothing to send
            self.requests += 1
            return await self._send_rows([item.text for item in chosen])

        def settle(answer: tuple[np.ndarray, Any] | None, reservation: Any) -> None:
            if reservation is not None:  # charge what was sent, not the admitted caller's share
                reservation.reconcile(sum(item.tokens for item in chosen))
            if answer is not None and self.guard.limiter is not None:
                self.guard.limiter.observe(self.guard.key, answer[1])

        try:
            answer = await self.guard.run(attempt, tokens=estimate, on_result=settle)
        except openai.BadRequestError as exc:
            if len(chosen) == 1:
                self._finish(chosen[0], problem=self._reason(exc))
                return
            half = len(chosen) // 2
            for part in (chosen[:half], chosen[half:]):
                cost = sum(item.tokens for item in part)
                await self._request(state, part, owner, max_texts, max_tokens, cost)
            return
        if answer is None:
            return
        for item, row in zip(chosen, answer[0], strict=True):
            self._finish(item, vector=row)

    @staticmethod
    def _finish(
        item: _Item,
        *,
        vector: np.ndarray | None = None,
        problem: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        item.vector, item.problem, item.error = vector, problem, error
        item.state = _DONE
        item.owner.changed.set()
