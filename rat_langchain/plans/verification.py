"""Background verification: check outputs off the critical path, and lose no verdict.

Two users of one idea. The plan executor verifies step results while the plan goes on; the
:class:`BackgroundVerifier` does the same for any agent or chain a user already has, as a callback
handler. Either way a verifier is a Runnable or a (sync or async) callable that receives one
payload dict::

    {"kind": "tool" | "llm" | "step", "name": ..., "input": ..., "output": ..., "step": id or None}

and returns a verdict: ``True``/``False``, a mapping with a ``"passed"`` key, or anything else
(which counts as passed: the verifier did not object). A verifier that raises or times out gives
a :class:`Verdict` with ``passed=False`` and the error, never an exception in the caller's run.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.outputs import LLMResult
from langchain_core.runnables import Runnable

__all__ = ["BackgroundVerifier", "Verdict", "Verifier"]

_log = logging.getLogger(__name__)

Verifier = Runnable[Any, Any] | Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one verification."""

    kind: str
    name: str
    passed: bool
    value: Any = None
    error: BaseException | None = None
    step: str | None = None
    run_id: uuid.UUID | None = None
    duration: float = 0.0


def _passed(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, Mapping) and "passed" in value:
        return bool(value["passed"])
    return True


async def _call(verifier: Verifier, payload: dict[str, Any]) -> Any:
    if isinstance(verifier, Runnable):
        return await verifier.ainvoke(payload)
    if inspect.iscoroutinefunction(verifier) or inspect.iscoroutinefunction(
        type(verifier).__call__
    ):
        return await verifier(payload)
    result = await asyncio.to_thread(verifier, payload)
    if inspect.isawaitable(result):
        return await result
    return result


async def verify(
    verifier: Verifier,
    payload: dict[str, Any],
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - a verifier's budget, applied inside
    run_id: uuid.UUID | None = None,
) -> Verdict:
    """Run one verification; its failure is a verdict, not an exception (except cancellation)."""
    started = time.monotonic()
    kind, name, step = payload["kind"], str(payload.get("name")), payload.get("step")
    try:
        async with asyncio.timeout(timeout):
            value = await _call(verifier, payload)
    except Exception as exc:
        if isinstance(exc, TimeoutError):
            exc = TimeoutError(f"verification of {name!r} took longer than {timeout} s")
        return Verdict(kind, name, False, None, exc, step, run_id, time.monotonic() - started)
    return Verdict(
        kind, name, _passed(value), value, None, step, run_id, time.monotonic() - started
    )


def check_verifier(verifier: Any) -> Verifier:
    if not (isinstance(verifier, Runnable) or callable(verifier)):
        raise TypeError(
            f"a verifier must be a Runnable or a callable, got {type(verifier).__name__}"
        )
    return verifier


class BackgroundVerifier(AsyncCallbackHandler):
    """Verify the tool and LLM outputs of any agent or chain in the background.

    Attach it to a run you already have; each tool or LLM output starts a verification as a task
    of its own (bounded by ``max_concurrency``), and the callback returns at once, so a slow
    verifier never delays the agent. The tasks are not children of the run: a run that fails or
    is cancelled still has its outputs verified, and :meth:`wait` returns every verdict::

        verifier = BackgroundVerifier(check_output, max_concurrency=4)
        answer = await agent.ainvoke(question, config={"callbacks": [verifier]})
        verdicts = await verifier.wait()

    Use it from async runs (``ainvoke``/``astream``/``abatch``): it schedules on the running loop.
    """

    def __init__(
        self,
        verifier: Verifier,
        *,
        max_concurrency: int = 4,
        timeout: float | None = None,
        tools: bool = True,
        llms: bool = True,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.verifier = check_verifier(verifier)
        self.timeout = timeout
        self.tools = tools
        self.llms = llms
        self.max_concurrency = max_concurrency
        self._gate: asyncio.Semaphore | None = None
        self._pending: set[asyncio.Task[Verdict]] = set()
        self._verdicts: list[Verdict] = []
        self._inputs: dict[uuid.UUID, tuple[str, Any]] = {}

    def __repr__(self) -> str:
        return (
            f"BackgroundVerifier(pending={len(self._pending)}, verdicts={len(self._verdicts)}, "
            f"max_concurrency={self.max_concurrency})"
        )

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- callbacks: remember inputs, start a verification on each output ----------------------

    async def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: uuid.UUID,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
        self._inputs[run_id] = (str(name), inputs if inputs is not None else input_str)

    async def on_tool_end(self, output: Any, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        name, given = self._inputs.pop(run_id, (kwargs.get("name") or "tool", None))
        if self.tools:
            self._start({"kind": "tool", "name": name, "input": given, "output": output}, run_id)

    async def on_tool_error(self, error: BaseException, *, run_id: uuid.UUID, **kw: Any) -> None:
        self._inputs.pop(run_id, None)

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: uuid.UUID,
        **kwargs: Any,
    ) -> None:
        self._inputs[run_id] = (_model_name(serialized, kwargs), messages)

    async def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: uuid.UUID,
        **kwargs: Any,
    ) -> None:
        self._inputs[run_id] = (_model_name(serialized, kwargs), prompts)

    async def on_llm_end(self, response: LLMResult, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        name, given = self._inputs.pop(run_id, ("llm", None))
        if self.llms:
            texts = [g.text for gens in response.generations for g in gens]
            output = texts[0] if len(texts) == 1 else texts
            self._start({"kind": "llm", "name": name, "input": given, "output": output}, run_id)

    async def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kw: Any) -> None:
        self._inputs.pop(run_id, None)

    def _start(self, payload: dict[str, Any], run_id: uuid.UUID) -> None:
        payload.setdefault("step", None)
        task = asyncio.get_running_loop().create_task(self._verify(payload, run_id))
        self._pending.add(task)
        task.add_done_callback(self._done)

    async def _verify(self, payload: dict[str, Any], run_id: uuid.UUID) -> Verdict:
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.max_concurrency)
        async with self._gate:
            return await verify(self.verifier, payload, timeout=self.timeout, run_id=run_id)

    def _done(self, task: asyncio.Task[Verdict]) -> None:
        self._pending.discard(task)
        if task.cancelled():
            return  # wait() was cancelled along with it, or the loop is closing
        self._verdicts.append(task.result())

    async def wait(self) -> list[Verdict]:
        """Wait for every verification started so far (and any they start), then return all
        verdicts in completion order."""
        while self._pending:
            await asyncio.wait(list(self._pending))
        return list(self._verdicts)

    def verdicts(self) -> list[Verdict]:
        """Verdicts that have arrived so far, without waiting."""
        return list(self._verdicts)


def _model_name(serialized: dict[str, Any] | None, kwargs: dict[str, Any]) -> str:
    params = kwargs.get("invocation_params") or {}
    name = params.get("model") or params.get("model_name") or (serialized or {}).get("name")
    return str(name or "llm")


async def notify(method: Callable[..., Any] | None, *args: Any) -> None:
    """Call an observer hook, sync or async; a failing observer is logged, never fatal."""
    if method is None:
        return
    try:
        result = method(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        _log.exception("observer %r failed", method)
