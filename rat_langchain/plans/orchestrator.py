"""Orchestrator: request → plan → parallel execution → verification → join, in one call.

The old system planned on one thread and executed on another, joined with ``thread.join()`` on
the event loop. Here it is one coroutine (``aexecute``) with a sync twin (``execute``) for old
callers, and a Runnable, so tracing shows the planner's run and the executor's (with one child
run per step) under the orchestrator's.

With a joiner (docs/plans.md) it loops: after a round has run, the joiner answers or asks for a
replan, up to ``max_replans``. ``replan="full"`` plans the whole request again (LLMCompiler);
``"partial"`` (the default) keeps every step that succeeded and was not refuted, and plans only
what went wrong, referring to the kept results. A partial replan does not wait for the round to
end: when a step fails (or its verification refutes it), the planner is asked for its
replacement at once, and the new steps join the running round, beside the branches of the
first plan that are still running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForChainRun
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import patch_config
from langchain_core.tools import BaseTool

from rat_langchain.config import RatConfig
from rat_langchain.errors import PlanError
from rat_langchain.plans._execution import Execution
from rat_langchain.plans.catalog import ToolCatalog
from rat_langchain.plans.executor import ParallelPlanExecutor, PlanResult
from rat_langchain.plans.joiner import Decision, Joiner, JoinInput, as_decision
from rat_langchain.plans.plan import Plan, Step
from rat_langchain.plans.planner import Planner, request_text
from rat_langchain.plans.results import StepResult

__all__ = ["Orchestrator"]

_log = logging.getLogger(__name__)
Replan = Literal["partial", "full"]


class Orchestrator(Runnable[Any, PlanResult]):
    """Plan a request and execute the plan; verifications are awaited before it returns.

    Example::

        orch = Orchestrator(Planner(llm, tools), ParallelPlanExecutor(tools, verifier=check))
        result = await orch.aexecute("Compare FAISS and ScaNN")
        result = orch.execute("...")          # from sync code, even inside a running loop

    ``streaming=True`` executes steps while the planner is still writing the plan. With
    ``joiner=`` (a :class:`~rat_langchain.plans.joiner.Joiner`, or any Runnable of a
    ``JoinInput`` to a ``Decision``) it answers: ``result.answer``, after at most
    ``max_replans`` replans (``replan``: ``"partial"`` or ``"full"``, see the module).
    """

    def __init__(
        self,
        planner: Planner,
        executor: ParallelPlanExecutor,
        *,
        streaming: bool = False,
        joiner: Runnable[Any, Any] | None = None,
        max_replans: int = 2,
        replan: Replan = "partial",
    ) -> None:
        if max_replans < 0:
            raise ValueError(f"max_replans must be >= 0, got {max_replans}")
        if replan not in ("partial", "full"):
            raise ValueError(f"replan must be 'partial' or 'full', got {replan!r}")
        self.planner = planner
        self.executor = executor
        self.streaming = streaming
        self.joiner = joiner
        self.max_replans = max_replans
        self.replan = replan

    @classmethod
    def from_config(
        cls,
        llm: BaseChatModel,
        tools: Mapping[str, Any] | Sequence[BaseTool],
        config: RatConfig | None = None,
        *,
        streaming: bool = False,
        join: bool = False,
        **executor_kwargs: Any,
    ) -> Orchestrator:
        """Planner and executor for ``tools`` as the config says (``parallel_execution``,
        ``background_tasks.verification``, ``caching.tool_catalog``); extra keyword arguments
        go to :class:`ParallelPlanExecutor` (``verifier=``, ``step_timeout=``...). ``join``:
        a :class:`Joiner` on ``llm`` answers, replanning as ``parallel_execution.max_replans``
        and ``replan`` say (one more LLM call per round)."""
        config = config or RatConfig.load()
        catalog = ToolCatalog(tools, cache=config.performance.caching.tool_catalog)
        planner = Planner(llm, catalog)
        executor = ParallelPlanExecutor.from_config(tools, config, **executor_kwargs)
        settings = config.performance.parallel_execution
        return cls(
            planner,
            executor,
            streaming=streaming,
            joiner=Joiner(llm) if join else None,
            max_replans=settings.max_replans,
            replan=settings.replan,
        )

    def __repr__(self) -> str:
        return (
            f"Orchestrator({self.planner!r}, {self.executor!r}, streaming={self.streaming}, "
            f"joiner={self.joiner!r}, max_replans={self.max_replans}, replan={self.replan!r})"
        )

    async def aexecute(self, request: str, *, config: RunnableConfig | None = None) -> PlanResult:
        return await self.ainvoke(request, config)

    def execute(self, request: str) -> PlanResult:
        """Sync wrapper: runs on the library's background loop, so it also works when called
        from code that is itself inside a running event loop (it blocks that caller)."""
        from rat_langchain import _portal

        return _portal.run(self.aexecute(request))

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> PlanResult:
        from rat_langchain import _portal

        return _portal.run(self.ainvoke(input, config, **kwargs))

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> PlanResult:
        return await self._acall_with_config(self._ainvoke, input, config, run_type="chain")

    async def _ainvoke(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> PlanResult:
        request = request_text(input)
        child = patch_config(config, callbacks=run_manager.get_child())
        if self.joiner is not None:
            return await _Rounds(self, request, child, run_manager).run()
        if self.streaming:
            steps = self.planner.astream_steps(request, config=child)
            return await self.executor.aexecute_stream(steps, goal=request, _run=run_manager)
        plan = await self.planner.ainvoke(request, config=child)
        return await self.executor.ainvoke(plan, config=child)


class _Rounds:
    """One request's loop: rounds of execution, each joined; partial replans within a round.

    State of one call, thrown away after it: the steps kept from earlier rounds, the replans
    made (the budget is ``max_replans``, shared by replans within a round and after one), and
    the steps broken while a replan was being written (the next one takes them)."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        request: str,
        config: RunnableConfig,
        run_manager: AsyncCallbackManagerForChainRun,
    ) -> None:
        self.o = orchestrator
        self.request = request
        self.config = config
        self.run_manager = run_manager
        self.replans = 0
        self.reasons: list[str] = []
        self.decisions: list[Decision] = []
        self.kept: dict[str, tuple[Step, StepResult]] = {}
        self.broken: list[str] = []
        self.repairing = False

    async def run(self) -> PlanResult:
        o = self.o
        if o.streaming:
            steps: AsyncIterator[Step] = o.planner.astream_steps(self.request, config=self.config)
        else:
            plan = await o.planner.ainvoke(self.request, config=self.config)
            steps = _each(_in_order(plan))
        while True:
            result = await self._round(steps)
            last = self.replans >= o.max_replans
            decision = await self._join(result, last)
            if decision.action == "answer" or last:
                result.answer = decision.answer if decision.action == "answer" else None
                result.decisions = list(self.decisions)
                result.replans = self.replans
                return result
            self.replans += 1
            self.reasons.append(decision.reason)
            steps = _each(await self._replan(result, decision.reason))

    async def _round(self, steps: AsyncIterator[Step]) -> PlanResult:
        partial = self.o.replan == "partial"
        result = await self.o.executor.aexecute_stream(
            steps,
            goal=self.request,
            _run=self.run_manager,
            _kept=list(self.kept.values()),
            _on_broken=self._broken if partial else None,
        )
        self.broken.clear()  # what broke after the last replan of the round: the joiner's now
        self.kept = {}
        if partial:  # what stands is kept for the next round
            standing = set(result.standing())
            for step in result.plan.steps:
                if step.id in standing:
                    self.kept[step.id] = (step, result.steps[step.id])
        return result

    async def _join(self, result: PlanResult, last: bool) -> Decision:
        join = JoinInput(self.request, result, last=last, rounds=list(self.reasons))
        assert self.o.joiner is not None
        decision = as_decision(await self.o.joiner.ainvoke(join, config=self.config))
        self.decisions.append(decision)
        return decision

    async def _replan(self, result: PlanResult, reason: str) -> list[Step]:
        """After a round: the whole request again (``full``), or what is missing (``partial``)."""
        if self.o.replan == "full":
            request = f"{self.request}\n\nAn earlier attempt fell short: {reason}"
            plan = await self.o.planner.ainvoke(request, config=self.config)
            return _in_order(plan)
        return await self.o.planner.areplan(
            self.request,
            result,
            broken=[step.id for step in result.plan.steps if step.id not in self.kept],
            reason=reason,
            prefix=f"r{self.replans}_",
            config=self.config,
        )

    # -- partial replans within a round -------------------------------------------------------

    def _broken(self, run: Execution, step_id: str) -> None:
        """A step failed or was refuted while the round runs: plan its replacement now (one
        replan at a time; steps broken meanwhile go to the next)."""
        self.broken.append(step_id)
        if self.repairing or not run.open or self.replans >= self.o.max_replans:
            return
        self.repairing = True
        run.tg.create_task(self._repair(run))

    async def _repair(self, run: Execution) -> None:
        try:
            await asyncio.sleep(0)  # failures of the same moment go into one replan
            while self.broken and self.replans < self.o.max_replans and run.open:
                broken, self.broken = self.broken, []
                self.replans += 1
                snapshot = PlanResult(
                    plan=run.result.plan,
                    steps=dict(run.result.steps),
                    verdicts=dict(run.verdicts),
                )
                try:
                    steps = await self.o.planner.areplan(
                        self.request,
                        snapshot,
                        broken=broken,
                        prefix=f"r{self.replans}_",
                        config=self.config,
                    )
                except PlanError as exc:  # no valid replacement: the joiner sees the failure
                    _log.warning("partial replan of %s failed: %s", ", ".join(broken), exc)
                    continue
                for step in steps:
                    if run.result.steps.get(step.id) is None and step.id not in run.by_id:
                        run.add(step, run.check_streamed(step))
        finally:
            self.repairing = False


def _in_order(plan: Plan) -> list[Step]:
    """The plan's steps, each after those it depends on (as a streamed plan must come)."""
    by_id = {step.id: step for step in plan.steps}
    return [by_id[i] for i in plan.order()]


async def _each(steps: Sequence[Step]) -> AsyncIterator[Step]:
    for step in steps:
        yield step
