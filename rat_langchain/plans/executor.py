"""ParallelPlanExecutor: run a plan's steps the moment their inputs are ready.

Why eager and event-driven: a level-by-level executor (LangGraph's super-steps, the old design)
waits for the slowest step of a level before starting anything of the next; LLMCompiler polls
every 10 ms. Here each finished step starts exactly the dependents it unblocked, under one
``asyncio.TaskGroup`` and a bound on steps in flight. A failed step marks its dependents skipped
(with the cause) while independent branches go on, or, with ``fail_fast``, cancels the rest.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool

from rat_langchain.config import RatConfig
from rat_langchain.guards import build_guards
from rat_langchain.guards.retry import RetryPolicy
from rat_langchain.plans._execution import Execution, resolve_args
from rat_langchain.plans.plan import Plan, Step
from rat_langchain.plans.results import PlanResult, StepResult, StepStatus
from rat_langchain.plans.verification import Verdict, Verifier, check_verifier

__all__ = ["ParallelPlanExecutor", "PlanCallbacks", "PlanResult", "StepResult", "StepStatus"]


_Call = Callable[[Any], Awaitable[Any]]


def _as_call(tool: Any) -> tuple[_Call, bool]:
    """How a step calls its tool, and whether it is a Runnable (which gets the step's callbacks).
    Plain callables are called directly (LangChain's Runnable machinery costs ~100 us a call,
    more than the scheduling itself); sync ones run off the loop."""
    if isinstance(tool, Runnable):
        return tool.ainvoke, True
    if inspect.iscoroutinefunction(tool) or inspect.iscoroutinefunction(
        type(tool).__call__  # an object with an async __call__
    ):
        return tool, False
    if callable(tool):
        return (lambda args: asyncio.to_thread(tool, args)), False
    raise TypeError(
        f"a tool must be a Runnable, a BaseTool or a callable, got {type(tool).__name__}"
    )


class PlanCallbacks:
    """Observer hooks for a plan run; override what you need, sync or async.

    They are awaited in the step's task (keep them quick); one that raises is logged and
    ignored, so an observer cannot break a plan."""

    def on_step_start(self, step: Step) -> Any:
        """A step got its slot and is about to call its tool."""

    def on_step_end(self, step: Step, result: StepResult) -> Any:
        """A step finished: succeeded, failed or timed out (``result.status``)."""

    def on_verified(self, step: Step, verdict: Verdict) -> Any:
        """A step's verification finished."""


class ParallelPlanExecutor(Runnable[Plan, PlanResult]):
    """Execute a :class:`~rat_langchain.plans.plan.Plan` with eager, bounded parallelism.

    Example::

        tools = {"search": search_tool, "summarise": summarise}
        executor = ParallelPlanExecutor(tools, max_parallel_steps=5, verifier=check)
        result = await executor.aexecute(plan)
        result.steps["s2"].value, result.makespan, result.critical_path(), result.verdicts

    It is a Runnable too (``await executor.ainvoke(plan)``, ``planner | executor``); then each
    step is a child run of the executor's run; a Runnable tool's own run is its step's run.
    """

    def __init__(
        self,
        tools: Mapping[str, Any] | Sequence[BaseTool],
        *,
        max_parallel_steps: int = 8,
        step_timeout: float | None = None,
        fail_fast: bool = False,
        parallel: bool = True,
        verifier: Verifier | None = None,
        verify_all: bool = False,
        background_verification: bool = True,
        verify_timeout: float | None = None,
        callbacks: Sequence[PlanCallbacks] = (),
        infer_dependencies: bool = True,
        step_retry: RetryPolicy | None = None,
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
        self.verifier = None if verifier is None else check_verifier(verifier)
        self.verify_all = verify_all
        self.background_verification = background_verification
        self.verify_timeout = verify_timeout
        self.callbacks = list(callbacks)
        self.infer_dependencies = infer_dependencies
        self.step_retry = step_retry
        self._clock = clock
        self._background: asyncio.TaskGroup | None = None

    @classmethod
    def from_config(
        cls,
        tools: Mapping[str, Any] | Sequence[BaseTool],
        config: RatConfig | None = None,
        **kwargs: Any,
    ) -> ParallelPlanExecutor:
        """An executor following ``performance.parallel_execution`` (with ``retries``' backoff
        for ``step_max_attempts``) and ``performance.background_tasks.verification``; keyword
        arguments win."""
        config = config or RatConfig.load()
        perf = config.performance
        settings: dict[str, Any] = {
            "parallel": perf.parallel_execution.enabled,
            "max_parallel_steps": perf.parallel_execution.max_parallel_steps,
            "background_verification": perf.background_tasks.verification,
            "infer_dependencies": perf.parallel_execution.dependency_analysis,
        }
        step_attempts = perf.parallel_execution.step_max_attempts
        if step_attempts > 1:
            # the retries section's backoff, from the one place guards are built
            policy = build_guards(config, limiter=None, breakers=None).retry
            settings["step_retry"] = replace(policy, max_attempts=step_attempts)
        return cls(tools, **{**settings, **kwargs})

    def __repr__(self) -> str:
        return (
            f"ParallelPlanExecutor(tools={sorted(self.tools)}, "
            f"max_parallel_steps={self.max_parallel_steps}, parallel={self.parallel})"
        )

    # -- lifetime for verifications that outlive aexecute -------------------------------------

    async def __aenter__(self) -> ParallelPlanExecutor:
        """Own a task group for verifications returned as handles (``wait_for_verification=
        False``); leaving the block waits for them, so none is lost."""
        self._background = asyncio.TaskGroup()
        await self._background.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        group, self._background = self._background, None
        if group is not None:
            await group.__aexit__(*exc)

    # -- running a plan ----------------------------------------------------------------------

    async def aexecute(
        self,
        plan: Plan,
        *,
        wait_for_verification: bool = True,
        _run: AsyncCallbackManagerForChainRun | None = None,
    ) -> PlanResult:
        """Run ``plan``; every invalid plan is rejected with PlanError before any tool runs.

        With ``wait_for_verification=False`` the result comes back as soon as the steps are done
        and ``result.pending`` holds the verification tasks (``await result.wait_verified()``);
        that needs ``async with executor:``, which owns them."""
        plan.validate_tools(self.tools)
        if not self.infer_dependencies:
            plan.check_listed_dependencies()
        deps = plan.dependencies()
        by_id = {step.id: step for step in plan.steps}
        run = Execution(self, Plan.model_construct(steps=[], goal=plan.goal), _run)

        def start(tg: asyncio.TaskGroup) -> None:
            run.tg = tg
            for step_id in plan.order():
                run.add(by_id[step_id], deps[step_id])

        result = await run.go(start, wait_for_verification)
        result.plan = plan
        result.steps = {step.id: result.steps[step.id] for step in plan.steps}
        return result

    async def aexecute_stream(
        self,
        steps: AsyncIterable[Step | Mapping[str, Any]],
        *,
        goal: str = "",
        wait_for_verification: bool = True,
        _run: AsyncCallbackManagerForChainRun | None = None,
        _kept: Sequence[tuple[Step, StepResult]] = (),
        _on_broken: Callable[[Execution, str], None] | None = None,
    ) -> PlanResult:
        """Run a plan while it is still being written (a streaming planner, as in LLMCompiler).

        Each step is checked when it arrives (its id is new, its tool known, and it depends only
        on steps already seen) and starts as soon as those have succeeded, so execution overlaps
        planning. A step that fails the check raises PlanError after cancelling whatever runs.

        For the orchestrator's rounds: ``_kept`` are steps of an earlier round with their
        results (referable, not run again); ``_on_broken`` hears of each step that fails or is
        refuted, and may add steps to the run (``Execution.add``) while it is open."""
        run = Execution(self, Plan.model_construct(steps=[], goal=goal), _run, _on_broken)
        for step, outcome in _kept:
            run.keep(step, outcome)

        async def feed() -> None:
            async for item in steps:
                step = item if isinstance(item, Step) else Step.model_validate(item)
                run.add(step, run.check_streamed(step))

        def start(tg: asyncio.TaskGroup) -> None:
            run.tg = tg
            tg.create_task(feed())

        result = await run.go(start, wait_for_verification)
        result.plan = Plan(steps=result.plan.steps, goal=goal)
        return result

    async def _run_step(self, step: Step, result: PlanResult, parent: Any) -> StepResult:
        started = self._clock()
        step_run = None
        attempts = [0]  # counted by _call_with_retries, read whether the step succeeds or not
        try:
            args = resolve_args(step.args, result)
            call, is_runnable = self.tools[step.tool]
            if parent is not None and parent.inheritable_handlers:
                # one child run per step, for whoever listens (nobody: ~60 us a step for
                # nothing). A Runnable tool's own run is that run, under the step's name: a
                # wrapping run would add two events a step, each a thread hop for a sync
                # handler, which a chain of steps waits for in turn (~500 us a step)
                name = f"{step.id}:{step.tool}"
                if is_runnable:
                    config = {"callbacks": parent.get_child(), "run_name": name}
                    call = partial(call, config=config)  # type: ignore[call-arg]
                else:
                    step_run = await parent.get_child().on_chain_start(
                        None, args, name=name, run_type="chain"
                    )
            value = await self._call_with_retries(step, call, args, attempts)
        except Exception as exc:
            if step_run is not None:
                await step_run.on_chain_error(exc)
            return StepResult(
                step.id, StepStatus.FAILED, None, exc, started, self._clock(), attempts[0]
            )
        if step_run is not None:
            await step_run.on_chain_end(value)
        return StepResult(
            step.id, StepStatus.SUCCEEDED, value, None, started, self._clock(), attempts[0]
        )

    async def _call_with_retries(
        self, step: Step, call: _Call, args: Any, attempts: list[int]
    ) -> Any:
        """Call the tool, each attempt under ``step_timeout``; with ``step_retry``, transient
        failures (timeouts, connection errors, 429/5xx) are retried with its backoff. Off by
        default: a tool with side effects must not run twice unless it is idempotent."""

        async def once() -> Any:
            attempts[0] += 1
            if self.step_timeout is None:
                return await call(args)
            scope = asyncio.timeout(self.step_timeout)
            try:
                async with scope:
                    return await call(args)
            except TimeoutError as exc:
                if not scope.expired():
                    raise  # the tool's own timeout, not the step's
                raise TimeoutError(
                    f"step {step.id!r} took longer than {self.step_timeout} s"
                ) from exc

        if self.step_retry is None or self.step_retry.max_attempts <= 1:
            return await once()
        async for attempt in self.step_retry.retrying():
            with attempt:
                value = await once()
        return value

    def execute(self, plan: Plan) -> PlanResult:
        """Sync wrapper for old callers (works inside a running loop too)."""
        from rat_langchain import _portal

        return _portal.run(self.aexecute(plan))

    # -- Runnable ----------------------------------------------------------------------------

    def invoke(
        self, input: Plan, config: RunnableConfig | None = None, **kwargs: Any
    ) -> PlanResult:
        from rat_langchain import _portal

        return _portal.run(self.ainvoke(input, config, **kwargs))

    async def ainvoke(
        self, input: Plan, config: RunnableConfig | None = None, **kwargs: Any
    ) -> PlanResult:
        """Run a Plan (or its dict/JSON form) as a traced run with one child run per step."""
        return await self._acall_with_config(self._ainvoke, input, config, run_type="chain")

    async def _ainvoke(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun
    ) -> PlanResult:
        return await self.aexecute(_as_plan(input), _run=run_manager)


def _as_plan(value: Any) -> Plan:
    if isinstance(value, Plan):
        return value
    if isinstance(value, str):
        return Plan.model_validate_json(value)
    if isinstance(value, Mapping):
        return Plan.model_validate(value)
    raise TypeError(f"expected a Plan (or its dict or JSON form), got {type(value).__name__}")
