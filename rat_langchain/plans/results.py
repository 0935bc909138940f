"""What a plan run produced: each step's status, value, error and times, and the whole run's
(makespan, critical path). Plain data, apart from the executor that fills it in."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import Any

from rat_langchain.plans.plan import Plan
from rat_langchain.plans.verification import Verdict

__all__ = ["PlanResult", "StepResult", "StepStatus"]


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
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    pending: dict[str, asyncio.Task[Verdict]] = field(default_factory=dict)
    # with a joiner (``Orchestrator(joiner=...)``): its final answer, every decision it made
    # (``joiner.Decision``), and how many times part or all of the plan was planned again
    answer: str | None = None
    decisions: list[Any] = field(default_factory=list)
    replans: int = 0

    async def wait_verified(self) -> dict[str, Verdict]:
        """Every verdict, waiting for verifications still running (``wait_for_verification=
        False``)."""
        for step_id, task in list(self.pending.items()):
            self.verdicts[step_id] = await task
            del self.pending[step_id]
        return dict(self.verdicts)

    @property
    def verified(self) -> bool:
        """Every verification so far passed (and none is still running)."""
        return not self.pending and all(v.passed for v in self.verdicts.values())

    @property
    def makespan(self) -> float:
        return self.ended - self.started

    @property
    def succeeded(self) -> bool:
        return all(r.status == StepStatus.SUCCEEDED for r in self.steps.values())

    def standing(self) -> list[str]:
        """Steps a replan may build on, in plan order: succeeded and not refuted by
        verification (nor built on a refuted one), or not finished yet (a run under way)."""
        refuted = {i for i, verdict in self.verdicts.items() if not verdict.passed}
        standing: list[str] = []
        bad: set[str] = set()
        for step in self.plan.steps:  # dependencies come first
            outcome = self.steps.get(step.id)
            failed = outcome is not None and outcome.status != StepStatus.SUCCEEDED
            if failed or step.id in refuted or any(d in bad for d in step.depends_on()):
                bad.add(step.id)
            else:
                standing.append(step.id)
        return standing

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
