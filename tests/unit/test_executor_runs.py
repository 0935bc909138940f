"""ParallelPlanExecutor's runs: observers, streamed plans, cancellation, Runnable tracing,
configuration, step retries and timeouts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.runnables import RunnableLambda

from rat_langchain import PlanCallbacks, Verdict
from rat_langchain.guards.retry import RetryPolicy
from rat_langchain.plans.executor import ParallelPlanExecutor, StepResult, StepStatus
from rat_langchain.plans.plan import Plan, PlanError, Step
from tests.support.plans import echo


async def test_observers_see_start_end_and_verified_and_cannot_break_the_plan(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    class Observer(PlanCallbacks):
        async def on_step_start(self, step: Step) -> None:
            seen.append(f"start {step.id}")

        def on_step_end(self, step: Step, result: StepResult) -> None:
            seen.append(f"end {step.id} {result.status.value}")

        def on_verified(self, step: Step, verdict: Verdict) -> None:
            seen.append(f"verified {step.id} {verdict.passed}")

    class Broken(PlanCallbacks):
        def on_step_start(self, step: Step) -> None:
            raise RuntimeError("observer bug")

    plan = Plan(steps=[Step(id="A", tool="echo", verify=True), Step(id="B", tool="echo")])
    executor = ParallelPlanExecutor(
        {"echo": echo},
        verifier=lambda payload: True,  # a sync verifier runs off the loop
        callbacks=[Broken(), Observer()],
        max_parallel_steps=1,
    )
    with caplog.at_level(logging.ERROR):
        result = await executor.aexecute(plan)
    assert result.succeeded
    assert seen[:4] == ["start A", "end A succeeded", "start B", "end B succeeded"]
    assert seen[4:] == ["verified A True"]
    assert "observer bug" in caplog.text


# -- streamed plans ---------------------------------------------------------------------------


async def test_streamed_plan_starts_a_step_before_the_plan_is_complete() -> None:
    a_started = asyncio.Event()
    log: list[str] = []

    async def first(args: dict[str, Any]) -> str:
        log.append("A runs")
        a_started.set()
        return "a"

    async def planner() -> AsyncIterator[Step]:
        yield Step(id="A", tool="first")
        await a_started.wait()  # the rest of the plan is written only after A has started
        log.append("plan goes on")
        yield Step(id="B", tool="echo", args={"x": "$A"})
        yield Step(id="C", tool="echo")
        log.append("plan complete")

    executor = ParallelPlanExecutor({"first": first, "echo": echo})
    async with asyncio.timeout(5):
        result = await executor.aexecute_stream(planner(), goal="g")
    assert log[:2] == ["A runs", "plan goes on"]
    assert result.succeeded
    assert result.steps["B"].value == {"got": {"x": "a"}}
    assert [s.id for s in result.plan.steps] == ["A", "B", "C"]
    assert result.plan.goal == "g"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"id": "X", "tool": "nope"}, "not one of"),
        ({"id": "X", "tool": "echo", "args": {"v": "$Z"}}, "has not defined before it"),
        ({"id": "A", "tool": "echo"}, "used twice"),
        ({"id": "X", "tool": "echo", "dependencies": ["X"]}, "depends on itself"),
    ],
)
async def test_a_streamed_plan_that_turns_invalid_cancels_cleanly(
    bad: dict[str, Any], message: str
) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(args: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def planner() -> AsyncIterator[dict[str, Any]]:
        yield {"id": "A", "tool": "slow"}
        await started.wait()
        yield bad

    executor = ParallelPlanExecutor({"slow": slow, "echo": echo})
    before = asyncio.all_tasks()
    with pytest.raises(PlanError, match=message):
        await executor.aexecute_stream(planner())
    assert cancelled.is_set()
    assert asyncio.all_tasks() == before  # nothing left running


async def test_cancelling_an_execution_cancels_every_running_step() -> None:
    started = 0
    cancelled = 0
    all_started = asyncio.Event()

    async def slow(args: dict[str, Any]) -> None:
        nonlocal started, cancelled
        started += 1
        if started == 3:
            all_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled += 1
            raise

    plan = Plan(steps=[Step(id=f"s{i}", tool="slow") for i in range(3)])
    before = asyncio.all_tasks()
    task = asyncio.create_task(ParallelPlanExecutor({"slow": slow}).aexecute(plan))
    await all_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == 3
    assert asyncio.all_tasks() == before


# -- as a Runnable ----------------------------------------------------------------------------


class Runs(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.starts: dict[UUID, tuple[str, UUID | None]] = {}
        self.ends: list[UUID] = []
        self.errors: list[UUID] = []

    async def on_chain_start(
        self,
        serialized: Any,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.starts[run_id] = (name or "?", parent_run_id)

    async def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.ends.append(run_id)

    async def on_chain_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self.errors.append(run_id)

    def by_name(self, name: str) -> UUID:
        return next(r for r, (n, _) in self.starts.items() if n == name)


async def test_executor_as_runnable_traces_one_child_run_per_step() -> None:
    async def boom(args: dict[str, Any]) -> None:
        raise RuntimeError("no")

    double = RunnableLambda(lambda args: args["x"] * 2, name="double")
    executor = ParallelPlanExecutor({"echo": echo, "double": double, "boom": boom})
    runs = Runs()
    plan = {
        "steps": [
            {"id": "a", "tool": "echo", "args": {"x": 2}},
            {"id": "b", "tool": "double", "args": {"x": "$a.got.x"}},
            {"id": "c", "tool": "boom"},
        ]
    }
    result = await executor.ainvoke(plan, config={"callbacks": [runs], "run_name": "plan"})
    assert result.steps["b"].value == 4
    root = runs.by_name("plan")
    assert runs.starts[root][1] is None
    for step in ("a:echo", "b:double", "c:boom"):
        assert runs.starts[runs.by_name(step)][1] == root  # each step is a child of the plan
    # a Runnable tool's own run is its step's run: one run a step, not a wrapper and the tool
    assert "double" not in {name for name, _ in runs.starts.values()}
    assert runs.by_name("b:double") in runs.ends
    assert runs.by_name("c:boom") in runs.errors
    assert root in runs.ends
    # and the sync Runnable entry point
    assert executor.invoke(Plan.model_validate(plan)).steps["a"].value == {"got": {"x": 2}}


async def test_executor_rejects_what_is_not_a_plan() -> None:
    executor = ParallelPlanExecutor({"echo": echo})
    with pytest.raises(TypeError, match="expected a Plan"):
        await executor.ainvoke(42)  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="no step 'zz'"):
        await executor.ainvoke('{"steps": [{"id": "a", "tool": "echo", "args": {"v": "$zz"}}]}')


async def test_from_config_and_strict_dependencies() -> None:
    from rat_langchain import RatConfig

    config = RatConfig.from_dict(
        {
            "performance": {
                "parallel_execution": {
                    "enabled": False,
                    "max_parallel_steps": 3,
                    "dependency_analysis": False,
                },
                "background_tasks": {"verification": False},
            }
        },
        env={},
    )
    executor = ParallelPlanExecutor.from_config({"echo": echo}, config)
    assert not executor.parallel
    assert executor.max_parallel_steps == 3
    assert not executor.background_verification
    assert executor.step_retry is None  # tools run once unless the config says otherwise
    retrying = ParallelPlanExecutor.from_config(
        {"echo": echo},
        RatConfig.from_dict(
            {
                "performance": {
                    "parallel_execution": {"step_max_attempts": 3},
                    "retries": {"initial_backoff_s": 0.25},
                }
            },
            env={},
        ),
    )
    assert retrying.step_retry is not None
    assert retrying.step_retry.max_attempts == 3
    assert retrying.step_retry.initial_backoff_s == 0.25
    unlisted = Plan(steps=[Step(id="a", tool="echo"), Step(id="b", tool="echo", args={"x": "$a"})])
    with pytest.raises(PlanError, match="does not list 'a'"):
        await executor.aexecute(unlisted)
    listed = Plan(
        steps=[
            Step(id="a", tool="echo"),
            Step(id="b", tool="echo", dependencies=["a"]),
            Step(id="c", tool="echo", args={"x": "$a"}, dependencies=["b"]),  # through b
        ]
    )
    assert (await executor.aexecute(listed)).succeeded

    async def stream() -> AsyncIterator[Step]:
        for step in unlisted.steps:
            yield step

    with pytest.raises(PlanError, match="does not list 'a'"):
        await executor.aexecute_stream(stream())


FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.001)


async def test_step_retry_retries_transient_failures_only_and_counts_attempts() -> None:
    calls: dict[str, int] = {"flaky": 0, "broken": 0, "down": 0, "plain": 0}

    def tool(name: str, error: Exception | None, fail_times: int) -> Any:
        async def run(args: dict[str, Any]) -> str:
            calls[name] += 1
            if error is not None and calls[name] <= fail_times:
                raise error
            return name

        return run

    tools = {
        "flaky": tool("flaky", ConnectionResetError("reset"), 2),  # fails twice, then works
        "broken": tool("broken", ValueError("bad argument"), 99),  # the caller's bug
        "down": tool("down", ConnectionRefusedError("refused"), 99),  # never comes back
        "plain": tool("plain", None, 0),
    }
    plan = Plan(steps=[Step(id=name, tool=name) for name in tools])
    result = await ParallelPlanExecutor(tools, step_retry=FAST_RETRY).aexecute(plan)
    steps = result.steps
    assert (steps["flaky"].status, steps["flaky"].attempts) == (StepStatus.SUCCEEDED, 3)
    assert (steps["broken"].status, steps["broken"].attempts) == (StepStatus.FAILED, 1)
    assert isinstance(steps["broken"].error, ValueError)
    assert (steps["down"].status, steps["down"].attempts) == (StepStatus.FAILED, 3)
    assert isinstance(steps["down"].error, ConnectionRefusedError)
    assert (steps["plain"].status, steps["plain"].attempts) == (StepStatus.SUCCEEDED, 1)
    assert calls == {"flaky": 3, "broken": 1, "down": 3, "plain": 1}

    calls["flaky"] = 0  # without a policy nothing runs twice: tools may have side effects
    result = await ParallelPlanExecutor(tools).aexecute(Plan(steps=[Step(id="f", tool="flaky")]))
    assert (result.steps["f"].status, result.steps["f"].attempts) == (StepStatus.FAILED, 1)


async def test_a_hung_attempt_is_abandoned_at_the_step_timeout_and_retried() -> None:
    never = asyncio.Event()
    attempts = 0

    async def hangs_once(args: dict[str, Any]) -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await never.wait()  # the first attempt hangs until the step timeout cancels it
        return "answered"

    executor = ParallelPlanExecutor({"t": hangs_once}, step_timeout=0.05, step_retry=FAST_RETRY)
    result = await executor.aexecute(Plan(steps=[Step(id="s", tool="t")]))
    assert result.steps["s"].status == StepStatus.SUCCEEDED
    assert result.steps["s"].value == "answered"
    assert result.steps["s"].attempts == 2


async def test_a_tools_own_timeout_is_not_reported_as_the_steps() -> None:
    async def own_timeout(args: dict[str, Any]) -> None:
        raise TimeoutError("upstream said 504")

    executor = ParallelPlanExecutor({"t": own_timeout}, step_timeout=30)
    result = await executor.aexecute(Plan(steps=[Step(id="s", tool="t")]))
    assert str(result.steps["s"].error) == "upstream said 504"
