"""Orchestrator: request → plan → parallel execution → verification, in one call.

The old system planned on one thread and executed on another, joined with ``thread.join()`` on
the event loop. Here it is one coroutine (``aexecute``) with a sync twin (``execute``) for old
callers, and a Runnable, so tracing shows the planner's run and the executor's (with one child
run per step) under the orchestrator's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import patch_config
from langchain_core.tools import BaseTool

from rat_langchain.config import RatConfig
from rat_langchain.plans.catalog import ToolCatalog
from rat_langchain.plans.executor import ParallelPlanExecutor, PlanResult
from rat_langchain.plans.planner import Planner, request_text

__all__ = ["Orchestrator"]


class Orchestrator(Runnable[Any, PlanResult]):
    """Plan a request and execute the plan; verifications are awaited before it returns.

    Example::

        orch = Orchestrator(Planner(llm, tools), ParallelPlanExecutor(tools, verifier=check))
        result = await orch.aexecute("Compare FAISS and ScaNN")
        result = orch.execute("...")          # from sync code, even inside a running loop

    ``streaming=True`` executes steps while the planner is still writing the plan.
    """

    def __init__(
        self, planner: Planner, executor: ParallelPlanExecutor, *, streaming: bool = False
    ) -> None:
        self.planner = planner
        self.executor = executor
        self.streaming = streaming

    @classmethod
    def from_config(
        cls,
        llm: BaseChatModel,
        tools: Mapping[str, Any] | Sequence[BaseTool],
        config: RatConfig | None = None,
        *,
        streaming: bool = False,
        **executor_kwargs: Any,
    ) -> Orchestrator:
        """Planner and executor for ``tools`` as the config says (``parallel_execution``,
        ``background_tasks.verification``, ``caching.tool_catalog``); extra keyword arguments
        go to :class:`ParallelPlanExecutor` (``verifier=``, ``step_timeout=``...)."""
        config = config or RatConfig.load()
        catalog = ToolCatalog(tools, cache=config.performance.caching.tool_catalog)
        planner = Planner(llm, catalog)
        executor = ParallelPlanExecutor.from_config(tools, config, **executor_kwargs)
        return cls(planner, executor, streaming=streaming)

    def __repr__(self) -> str:
        return f"Orchestrator({self.planner!r}, {self.executor!r}, streaming={self.streaming})"

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
        if self.streaming:
            steps = self.planner.astream_steps(request, config=child)
            return await self.executor.aexecute_stream(steps, goal=request, _run=run_manager)
        plan = await self.planner.ainvoke(request, config=child)
        return await self.executor.ainvoke(plan, config=child)
