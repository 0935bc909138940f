"""ParallelPlanExecutor's verification: in the background or inline, never lost, bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rat_langchain.plans.executor import ParallelPlanExecutor, StepStatus
from rat_langchain.plans.plan import Plan, Step
from tests.support.plans import chain_plan, echo


async def test_background_verification_does_not_hold_back_dependents() -> None:
    """A's verifier waits for C, which needs A's result: only a background verifier finishes."""
    c_ran = asyncio.Event()

    async def mark(args: dict[str, Any]) -> str:
        c_ran.set()
        return "done"

    async def verifier(payload: dict[str, Any]) -> dict[str, Any]:
        await c_ran.wait()  # would deadlock if verification blocked A's dependents
        return {"passed": payload["output"] == {"got": {"x": 1}}, "step": payload["step"]}

    executor = ParallelPlanExecutor({"echo": echo, "mark": mark}, verifier=verifier)
    async with asyncio.timeout(5):
        result = await executor.aexecute(chain_plan())
    assert result.succeeded
    assert result.verified
    assert list(result.verdicts) == ["A"]  # only the step marked verify
    assert result.verdicts["A"].value == {"passed": True, "step": "A"}
    assert not result.pending


async def test_inline_verification_runs_before_dependents() -> None:
    log: list[str] = []

    async def mark(args: dict[str, Any]) -> str:
        log.append("C")
        return "done"

    async def verifier(payload: dict[str, Any]) -> bool:
        log.append(f"verify {payload['step']}")
        return True

    executor = ParallelPlanExecutor(
        {"echo": echo, "mark": mark},
        verifier=verifier,
        verify_all=True,
        background_verification=False,
    )
    result = await executor.aexecute(chain_plan())
    assert log == ["verify A", "verify B", "C", "verify C"]
    assert set(result.verdicts) == {"A", "B", "C"}


async def test_failing_verifier_and_failing_plan_lose_no_verdict() -> None:
    release = asyncio.Event()

    async def boom(args: dict[str, Any]) -> None:
        release.set()  # fails only once the verifications below are under way
        raise RuntimeError("tool broke")

    async def verifier(payload: dict[str, Any]) -> bool:
        await release.wait()
        if payload["step"] == "A":
            raise ValueError("verifier broke")
        return payload["output"]["got"] == {}

    plan = Plan(
        steps=[
            Step(id="A", tool="echo", verify=True),
            Step(id="B", tool="echo", verify=True),
            Step(id="F", tool="boom", dependencies=["A", "B"]),
            Step(id="G", tool="echo", args={"x": "$F"}),
        ]
    )
    for fail_fast in (False, True):
        release.clear()
        executor = ParallelPlanExecutor(
            {"echo": echo, "boom": boom}, verifier=verifier, fail_fast=fail_fast
        )
        result = await executor.aexecute(plan)
        assert result.steps["F"].status == StepStatus.FAILED
        assert result.steps["G"].status in (StepStatus.SKIPPED, StepStatus.CANCELLED)
        assert set(result.verdicts) == {"A", "B"}  # both verifications finished regardless
        assert result.verdicts["A"].passed is False
        assert isinstance(result.verdicts["A"].error, ValueError)
        assert result.verdicts["B"].passed is True
        assert not result.verified


async def test_verifications_returned_as_handles_need_an_owner() -> None:
    release = asyncio.Event()

    async def verifier(payload: dict[str, Any]) -> bool:
        await release.wait()
        return True

    executor = ParallelPlanExecutor({"echo": echo}, verifier=verifier, verify_all=True)
    plan = Plan(steps=[Step(id="A", tool="echo"), Step(id="B", tool="echo")])
    with pytest.raises(RuntimeError, match="async with executor"):
        await executor.aexecute(plan, wait_for_verification=False)
    async with executor:
        result = await executor.aexecute(plan, wait_for_verification=False)
        assert result.succeeded
        assert set(result.pending) == {"A", "B"}
        assert not result.verified  # still running
        release.set()
        verdicts = await result.wait_verified()
    assert set(verdicts) == {"A", "B"}
    assert result.verified


async def test_verification_timeout_is_a_failed_verdict() -> None:
    async def stuck(payload: dict[str, Any]) -> bool:
        await asyncio.Event().wait()
        return True

    executor = ParallelPlanExecutor(
        {"echo": echo}, verifier=stuck, verify_all=True, verify_timeout=0.01
    )
    result = await executor.aexecute(Plan(steps=[Step(id="A", tool="echo")]))
    assert result.succeeded
    verdict = result.verdicts["A"]
    assert not verdict.passed
    assert isinstance(verdict.error, TimeoutError)
    assert "'echo'" in str(verdict.error)
