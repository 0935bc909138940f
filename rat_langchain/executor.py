"""ParallelPlanExecutor: run a plan's steps the moment their inputs are ready.

Why eager and event-driven: a level-by-level executor (LangGraph's super-steps, the old design)
waits for the slowest step of a level before starting anything of the next; LLMCompiler polls
every 10 ms. Here each finished step starts exactly the dependents it unblocked, under one
``asyncio.TaskGroup`` and a bound on steps in flight. A failed step marks its dependents skipped
(with the cause) while independent branches go on, or, with ``fail_fast``, cancels the rest.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool

from rat_langchain.plan import REFERENCE, Plan, PlanError, Step, find_references, resolve_path

__all__ = ["ParallelPlanExecutor", "PlanResult", "StepResult", "StepStatus"]


class StepStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


@dataclass
class StepResult:
    """What happened to one step; times are ``time.monotonic()`` seconds."""

    id: str
    status: StepStatus
    value: Any = None
    error: BaseException | None = None
    started: float | None = None
    ended: float | None = None
    attempts: int = 0

    @property
    def duration(self) -> float:
        if self.started is None or self.ended is None:
            return 0.0
        return self.ended - self.started


@dataclass
class PlanResult:
    """Per-step results, the plan's makespan and its critical path."""

    plan: Plan
    steps: dict[str, StepResult] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0

    @property
    def makespan(self) -> float:
        return self.ended - self.started

    @property
    def succeeded(self) -> bool:
        return all(r.status == StepStatus.SUCCEEDED for r in self.steps.values())

    def values(self) -> dict[str, Any]:
        return {i: r.value for i, r in self.steps.items() if r.status == StepStatus.SUCCEEDED}

    def critical_path(self) -> tuple[list[str], float]:
        """The chain of dependencies with the largest summed step duration, and that sum."""
        deps = self.plan.dependencies()
        best: dict[str, tuple[float, list[str]]] = {}
        for step_id in self.plan.order():
            own = self.steps[step_id].duration
            before = max((best[d] for d in deps[step_id]), key=lambda b: b[0], default=(0.0, []))
            best[step_id] = (before[0] + own, [*before[1], step_id])
        total, path = max(best.values(), key=lambda b: b[0], default=(0.0, []))
        return path, total


_Call = Callable[[Any], Awaitable[Any]]


def _as_call(tool: Any) -> _Call:
    """How a step calls its tool. Plain callables are called directly (LangChain's Runnable
    machinery costs ~100 us a call, more than the scheduling itself); sync ones run off the loop."""
    if isinstance(tool, Runnable):
        return tool.ainvoke
    if inspect.iscoroutinefunction(tool) or inspect.iscoroutinefunction(
        type(tool).__call__  # an object with an async __call__
    ):
        return tool
    if callable(tool):
        return lambda args: asyncio.to_thread(tool, args)
    raise TypeError(
        f"a tool must be a Runnable, a BaseTool or a callable, got {type(tool).__name__}"
    )


class ParallelPlanExecutor:
    """Execute a :class:`~rat_langchain.plan.Plan` with eager, bounded parallelism.

    Example::

        tools = {"search": search_tool, "summarise": summarise}
        executor = ParallelPlanExecutor(tools, max_parallel_steps=5)
        result = await executor.aexecute(plan)
        result.steps["s2"].value, result.makespan, result.critical_path()
    """

    def __init__(
        self,
        tools: Mapping[str, Any] | Sequence[BaseTool],
        *,
        max_parallel_steps: int = 8,
        step_timeout: float | None = None,
        fail_fast: bool = False,
        parallel: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        named = dict(tools) if isinstance(tools, Mapping) else {t.name: t for t in tools}
        self.tools = {name: _as_call(tool) for name, tool in named.items()}
        if max_parallel_steps < 1:
            raise ValueError(f"max_parallel_steps must be >= 1, got {max_parallel_steps}")
        self.max_parallel_steps = max_parallel_steps
        self.step_timeout = step_timeout
        self.fail_fast = fail_fast
        self.parallel = parallel
        self._clock = clock

    async def aexecute(self, plan: Plan) -> PlanResult:
        """Run ``plan``; every invalid plan is rejected with PlanError before any tool runs."""
        plan.validate_tools(self.tools)
        result = PlanResult(plan=plan, started=self._clock())
        by_id = {step.id: step for step in plan.steps}
        deps = plan.dependencies()
        users: dict[str, list[str]] = {step.id: [] for step in plan.steps}
        waiting = {step_id: len(set(ds)) for step_id, ds in deps.items()}
        for step_id, ds in deps.items():
            for d in set(ds):
                users[d].append(step_id)
        limit = self.max_parallel_steps if self.parallel else 1
        gate = asyncio.Semaphore(limit)

        async def run(step: Step, tg: asyncio.TaskGroup) -> None:
            async with gate:
                outcome = await self._run_step(step, result)
            result.steps[step.id] = outcome
            if outcome.status != StepStatus.SUCCEEDED:
                if self.fail_fast:
                    raise _FailFast(step.id)
                self._skip_dependents(step.id, users, result)
                return
            for user in users[step.id]:
                waiting[user] -= 1
                if waiting[user] == 0 and user not in result.steps:
                    tg.create_task(run(by_id[user], tg))

        try:
            if self.parallel:
                async with asyncio.TaskGroup() as tg:
                    for step in plan.steps:
                        if waiting[step.id] == 0:
                            tg.create_task(run(step, tg))
            else:
                await self._run_sequential(plan, result, users)
        except* _FailFast:
            pass
        for step in plan.steps:  # whatever fail_fast cancelled or never started
            result.steps.setdefault(step.id, StepResult(step.id, StepStatus.CANCELLED))
        result.ended = self._clock()
        result.steps = {step.id: result.steps[step.id] for step in plan.steps}
        return result

    async def _run_sequential(
        self, plan: Plan, result: PlanResult, users: dict[str, list[str]]
    ) -> None:
        """``parallel_execution.enabled: false``: a topological order, one step at a time."""
        for step_id in plan.order():
            if step_id in result.steps:  # skipped because a dependency failed
                continue
            outcome = await self._run_step(plan.step(step_id), result)
            result.steps[step_id] = outcome
            if outcome.status != StepStatus.SUCCEEDED:
                if self.fail_fast:
                    raise _FailFast(step_id)
                self._skip_dependents(step_id, users, result)

    def _skip_dependents(
        self, failed: str, users: dict[str, list[str]], result: PlanResult
    ) -> None:
        stack = list(users[failed])
        while stack:
            user = stack.pop()
            if user in result.steps:
                continue
            cause = PlanError(f"skipped: step {failed!r} did not succeed")
            result.steps[user] = StepResult(user, StepStatus.SKIPPED, error=cause)
            stack.extend(users[user])

    async def _run_step(self, step: Step, result: PlanResult) -> StepResult:
        started = self._clock()
        try:
            args = _resolve(step.args, result)
            call = self.tools[step.tool]
            if self.step_timeout is None:
                value = await call(args)
            else:
                async with asyncio.timeout(self.step_timeout):
                    value = await call(args)
        except Exception as exc:
            return StepResult(step.id, StepStatus.FAILED, None, exc, started, self._clock(), 1)
        return StepResult(step.id, StepStatus.SUCCEEDED, value, None, started, self._clock(), 1)

    def execute(self, plan: Plan) -> PlanResult:
        """Sync wrapper for old callers (works inside a running loop too)."""
        from rat_langchain import _portal

        return _portal.run(self.aexecute(plan))


class _FailFast(Exception):
    def __init__(self, step_id: str) -> None:
        super().__init__(step_id)
        self.step_id = step_id


def _resolve(value: Any, result: PlanResult) -> Any:
    """Replace references by earlier results: a whole ``$s`` keeps its type, inside a string it
    is interpolated."""
    if isinstance(value, str):
        refs = list(find_references(value))
        if not refs:
            return value
        if refs[0].whole:
            ref = refs[0]
            return resolve_path(result.steps[ref.step].value, ref.path, ref.text)

        def substitute(match: re.Match[str]) -> str:
            path = tuple(p for p in match.group(2).split(".") if p)
            found = resolve_path(result.steps[match.group(1)].value, path, match.group(0))
            return str(found)

        return REFERENCE.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _resolve(v, result) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_resolve(v, result) for v in value)
    return value
