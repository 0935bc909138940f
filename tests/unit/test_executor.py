"""ParallelPlanExecutor: eager scheduling, bounds, failure isolation, sequential equivalence."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from langchain_core.tools import tool

from rat_langchain.plans.executor import ParallelPlanExecutor, StepStatus
from rat_langchain.plans.plan import Plan, PlanError, Step


class Gate:
    """Tools that wait for the test's say-so and record what ran, in order."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}
        self.log: list[str] = []
        self.running = 0
        self.peak = 0

    def tool(self, name: str) -> Any:
        async def run(args: dict[str, Any]) -> dict[str, Any]:
            self.log.append(f"start {name}")
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                await self.events.setdefault(name, asyncio.Event()).wait()
            finally:
                self.running -= 1
            self.log.append(f"end {name}")
            return {"from": name, "args": args}

        return run

    def release(self, name: str) -> None:
        self.events.setdefault(name, asyncio.Event()).set()


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_step_starts_when_its_inputs_are_ready_not_when_its_level_ends() -> None:
    gate = Gate()
    plan = Plan(
        steps=[
            Step(id="A", tool="a"),
            Step(id="B", tool="b"),
            Step(id="C", tool="c", args={"x": "$A.from"}),
            Step(id="D", tool="d", args={"x": "$B"}),
        ]
    )
    executor = ParallelPlanExecutor({n: gate.tool(n) for n in "abcd"})
    task = asyncio.create_task(executor.aexecute(plan))
    await _settle()
    gate.release("a")  # A (fast) ends while B (slow) is still running
    await _settle()
    assert "start c" in gate.log
    assert "end b" not in gate.log  # C started before B ended: no level barrier
    for name in "bcd":
        gate.release(name)
    result = await task
    assert result.succeeded
    assert result.steps["C"].value["args"] == {"x": "a"}  # a path into A's result
    assert result.steps["D"].value["args"]["x"]["from"] == "b"  # a whole result keeps its type
    assert result.plan.levels() == [["A", "B"], ["C", "D"]]


async def test_max_parallel_steps_is_never_exceeded() -> None:
    gate = Gate()
    plan = Plan(steps=[Step(id=f"s{i}", tool="t") for i in range(12)])
    task = asyncio.create_task(
        ParallelPlanExecutor({"t": gate.tool("t")}, max_parallel_steps=3).aexecute(plan)
    )
    await _settle()
    assert gate.running == 3
    gate.release("t")
    await task
    assert gate.peak == 3


async def test_failure_skips_dependents_and_independent_branches_go_on() -> None:
    async def boom(args: dict[str, Any]) -> None:
        raise RuntimeError("tool broke")

    async def ok(args: dict[str, Any]) -> str:
        return "fine"

    plan = Plan(
        steps=[
            Step(id="bad", tool="boom"),
            Step(id="child", tool="ok", args={"x": "$bad"}),
            Step(id="grandchild", tool="ok", dependencies=["child"]),
            Step(id="other", tool="ok"),
        ]
    )
    result = await ParallelPlanExecutor({"boom": boom, "ok": ok}).aexecute(plan)
    assert result.steps["bad"].status == StepStatus.FAILED
    assert str(result.steps["bad"].error) == "tool broke"
    assert result.steps["child"].status == StepStatus.SKIPPED
    assert "'bad' did not succeed" in str(result.steps["grandchild"].error)
    assert result.steps["other"].value == "fine"
    assert list(result.steps) == ["bad", "child", "grandchild", "other"]


async def test_fail_fast_cancels_running_steps_cleanly() -> None:
    gate = Gate()

    async def boom(args: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("stop everything")

    plan = Plan(steps=[Step(id="slow", tool="slow"), Step(id="bad", tool="boom")])
    result = await ParallelPlanExecutor(
        {"slow": gate.tool("slow"), "boom": boom}, fail_fast=True
    ).aexecute(plan)
    assert result.steps["bad"].status == StepStatus.FAILED
    assert result.steps["slow"].status == StepStatus.CANCELLED
    assert gate.running == 0  # nothing left running


async def test_missing_field_fails_that_step_and_unknown_tool_fails_before_running() -> None:
    async def ok(args: dict[str, Any]) -> dict[str, int]:
        return {"n": 1}

    plan = Plan(steps=[Step(id="a", tool="ok"), Step(id="b", tool="ok", args={"x": "$a.missing"})])
    result = await ParallelPlanExecutor({"ok": ok}).aexecute(plan)
    assert result.steps["b"].status == StepStatus.FAILED
    assert "no field 'missing'" in str(result.steps["b"].error)
    ran: list[str] = []
    executor = ParallelPlanExecutor({"ok": lambda args: ran.append("x")})
    with pytest.raises(PlanError, match="tool 'nope'"):
        await executor.aexecute(Plan(steps=[Step(id="a", tool="ok"), Step(id="b", tool="nope")]))
    assert ran == []


async def test_langchain_tools_and_string_interpolation_and_critical_path() -> None:
    @tool
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    plan = Plan(
        steps=[
            Step(id="a", tool="shout", args={"text": "hello"}),
            Step(id="b", tool="shout", args={"text": "said: $a!"}),
        ]
    )
    result = await ParallelPlanExecutor([shout]).aexecute(plan)
    assert result.steps["b"].value == "SAID: HELLO!"
    path, total = result.critical_path()
    assert path == ["a", "b"]
    assert total <= result.makespan + 1e-6


def _random_plan(rng: random.Random) -> Plan:
    steps = []
    for i in range(rng.randint(1, 15)):
        deps = rng.sample(range(i), k=min(i, rng.randint(0, 3)))
        args = {f"in{d}": f"$s{d}.v" for d in deps}
        steps.append(
            Step(
                id=f"s{i}",
                tool=rng.choice(["add", "fail"] if rng.random() < 0.1 else ["add"]),
                args=args,
            )
        )
    return Plan(steps=steps)


async def test_sequential_mode_gives_the_same_results_on_100_random_plans() -> None:
    async def add(args: dict[str, Any]) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"v": 1 + sum(args.values())}

    async def fail(args: dict[str, Any]) -> None:
        raise ValueError("no")

    tools = {"add": add, "fail": fail}
    rng = random.Random(1)
    for _ in range(100):
        plan = _random_plan(rng)
        parallel = await ParallelPlanExecutor(tools).aexecute(plan)
        sequential = await ParallelPlanExecutor(tools, parallel=False).aexecute(plan)
        assert {i: (r.status, r.value) for i, r in parallel.steps.items()} == {
            i: (r.status, r.value) for i, r in sequential.steps.items()
        }


def test_sync_execute_wrapper() -> None:
    plan = Plan(steps=[Step(id="a", tool="t", args={"x": 1})])
    result = ParallelPlanExecutor({"t": lambda args: args["x"] + 1}).execute(plan)
    assert result.steps["a"].value == 2
