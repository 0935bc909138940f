"""One run of a plan: who waits for whom, what runs, what is verified (``Execution``), and
how a step's arguments take earlier results (``resolve_args``).

Apart from ``executor.py``, which holds the executor's settings and the Runnable interface:
one run is a state of its own, made per call and thrown away after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun

from rat_langchain.plans.plan import (
    REFERENCE,
    Plan,
    PlanError,
    Step,
    find_references,
    resolve_path,
)
from rat_langchain.plans.results import PlanResult, StepResult, StepStatus
from rat_langchain.plans.verification import Verdict, notify, verify

if TYPE_CHECKING:
    from rat_langchain.plans.executor import ParallelPlanExecutor

__all__ = ["Execution", "resolve_args", "single_error"]


class Execution:
    """The state of one run: who waits for whom, what runs, what is verified.

    Steps are added in an order where dependencies come first (a topological order of a whole
    plan, or the order a streaming planner writes them)."""

    def __init__(
        self,
        executor: ParallelPlanExecutor,
        plan: Plan,
        run_manager: AsyncCallbackManagerForChainRun | None,
        on_broken: Callable[[Execution, str], None] | None = None,
    ) -> None:
        """``on_broken(run, step_id)``: a step failed or its verification refuted it (the
        orchestrator's partial replan starts from there, while the rest runs on)."""
        self.executor = executor
        self.on_broken = on_broken
        self.open = False  # steps may still be added (``tg`` runs)
        self.result = PlanResult(plan=plan)
        self.run_manager = run_manager
        self.users: dict[str, list[str]] = {}
        self.waiting: dict[str, int] = {}
        self.by_id: dict[str, Step] = {}
        self.gate = asyncio.Semaphore(executor.max_parallel_steps if executor.parallel else 1)
        self.tg: asyncio.TaskGroup
        self.verifications: asyncio.TaskGroup | None = None
        self.pending: dict[str, asyncio.Task[Verdict]] = {}
        self.verdicts: dict[str, Verdict] = {}

    async def go(
        self, start: Callable[[asyncio.TaskGroup], None], wait_for_verification: bool
    ) -> PlanResult:
        executor, result = self.executor, self.result
        if not wait_for_verification and executor._background is None:
            raise RuntimeError(
                "wait_for_verification=False needs `async with executor:` to own the "
                "verifications that outlive aexecute"
            )
        result.started = executor._clock()
        try:
            async with contextlib.AsyncExitStack() as stack:
                if wait_for_verification:
                    self.verifications = await stack.enter_async_context(asyncio.TaskGroup())
                else:
                    self.verifications = executor._background
                try:
                    async with asyncio.TaskGroup() as tg:
                        self.open = True
                        start(tg)
                except* _FailFast:
                    pass
                finally:
                    self.open = False
                for step in result.plan.steps:  # whatever fail_fast cancelled or never started
                    result.steps.setdefault(step.id, StepResult(step.id, StepStatus.CANCELLED))
                result.ended = executor._clock()
        except ExceptionGroup as group:  # a streamed plan turned invalid, or its stream broke
            raise single_error(group) from None
        result.steps = {step.id: result.steps[step.id] for step in result.plan.steps}
        result.verdicts = dict(self.verdicts)
        if wait_for_verification:
            result.verdicts.update((i, t.result()) for i, t in self.pending.items())
        else:
            result.pending = dict(self.pending)
        return result

    def check_streamed(self, step: Step) -> list[str]:
        known = self.by_id
        if step.id in known:
            raise PlanError(f"step id {step.id!r} is used twice")
        if step.tool not in self.executor.tools:
            raise PlanError(
                f"step {step.id!r} uses tool {step.tool!r}, "
                f"which is not one of {sorted(self.executor.tools)}"
            )
        if not self.executor.infer_dependencies:
            Plan.model_construct(steps=[*self.by_id.values(), step]).check_listed_dependencies()
        deps = step.depends_on()
        for dep in deps:
            if dep == step.id:
                raise PlanError(f"step {step.id!r} depends on itself")
            if dep not in known:
                raise PlanError(
                    f"step {step.id!r} depends on {dep!r}, which the plan has not defined "
                    "before it (a streamed plan may only refer to earlier steps)"
                )
        return deps

    def keep(self, step: Step, outcome: StepResult) -> None:
        """A step that already ran (an earlier round's): its result is referable and it is not
        run again."""
        self.by_id[step.id] = step
        self.result.plan.steps.append(step)
        self.users[step.id] = []
        self.result.steps[step.id] = outcome

    def add(self, step: Step, deps: list[str]) -> None:
        self.by_id[step.id] = step
        self.result.plan.steps.append(step)
        self.users[step.id] = []
        unique = list(dict.fromkeys(deps))  # in order: tests and runs see the same
        for dep in unique:  # a dependency that already failed: skipped, waiting for nothing
            done = self.result.steps.get(dep)
            if done is not None and done.status != StepStatus.SUCCEEDED:
                cause = PlanError(f"skipped: step {dep!r} did not succeed")
                self.result.steps[step.id] = StepResult(step.id, StepStatus.SKIPPED, error=cause)
                return
        pending = 0
        for dep in unique:
            if self.result.steps.get(dep) is None:
                self.users[dep].append(step.id)
                pending += 1
        self.waiting[step.id] = pending
        if pending == 0:
            self.tg.create_task(self.run(step))

    async def run(self, step: Step) -> None:
        executor, result = self.executor, self.result
        async with self.gate:
            for observer in executor.callbacks:
                await notify(observer.on_step_start, step)
            outcome = await executor._run_step(step, result, self.run_manager)
        result.steps[step.id] = outcome
        for observer in executor.callbacks:
            await notify(observer.on_step_end, step, outcome)
        if outcome.status != StepStatus.SUCCEEDED:
            if executor.fail_fast:
                raise _FailFast(step.id)
            self.skip_dependents(step.id)
            if self.on_broken is not None:
                self.on_broken(self, step.id)
            return
        if executor.verifier is not None and (step.verify or executor.verify_all):
            if executor.background_verification:
                assert self.verifications is not None
                self.pending[step.id] = self.verifications.create_task(self.verify(step, outcome))
            else:  # verified before its dependents may start
                self.verdicts[step.id] = await self.verify(step, outcome)
        for user in self.users[step.id]:
            self.waiting[user] -= 1
            if self.waiting[user] == 0 and user not in result.steps:
                self.tg.create_task(self.run(self.by_id[user]))

    async def verify(self, step: Step, outcome: StepResult) -> Verdict:
        executor = self.executor
        assert executor.verifier is not None
        payload = {
            "kind": "step",
            "name": step.tool,
            "step": step.id,
            "input": step.args,
            "output": outcome.value,
        }
        verdict = await verify(executor.verifier, payload, timeout=executor.verify_timeout)
        self.verdicts.setdefault(step.id, verdict)  # seen by a replan before the run ends
        for observer in executor.callbacks:
            await notify(observer.on_verified, step, verdict)
        if not verdict.passed and self.on_broken is not None:
            self.on_broken(self, step.id)
        return verdict

    def skip_dependents(self, failed: str) -> None:
        stack = list(self.users[failed])
        while stack:
            user = stack.pop()
            if user in self.result.steps:
                continue
            cause = PlanError(f"skipped: step {failed!r} did not succeed")
            self.result.steps[user] = StepResult(user, StepStatus.SKIPPED, error=cause)
            stack.extend(self.users[user])


class _FailFast(Exception):
    """A step failed under ``fail_fast``: the run's task group cancels the rest."""

    def __init__(self, step_id: str) -> None:
        super().__init__(step_id)
        self.step_id = step_id


def resolve_args(value: Any, result: PlanResult) -> Any:
    """Replace references by earlier results: a whole ``$s`` keeps its type, inside a string it
    is interpolated."""
    if isinstance(value, str):
        if "$" not in value:
            return value
        refs = list(find_references(value))
        if refs and refs[0].whole:
            ref = refs[0]
            return resolve_path(result.steps[ref.step].value, ref.path, ref.text)

        def substitute(match: re.Match[str]) -> str:
            if match.group(1) is None:
                return "$"  # $$ is a literal $
            path = tuple(p for p in match.group(2).split(".") if p)
            found = resolve_path(result.steps[match.group(1)].value, path, match.group(0))
            return str(found)

        return REFERENCE.sub(substitute, value)
    if isinstance(value, dict):
        return {k: resolve_args(v, result) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(resolve_args(v, result) for v in value)
    return value


def single_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The one error inside nested task-group wrappers, or the group when there are several."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
