"""Planner: an LLM writes the plan, asynchronously, and fixes it when it is invalid.

Why this shape: the old planner blocked a thread on a sync LLM call and trusted whatever came
back. Here the LLM is called with ``ainvoke`` (or streamed) through structured output whose
schema names the catalog's tools; intent analysis and agent routing, when given, run at the same
time before it; and a plan that fails validation is sent back with the exact error, a bounded
number of times, instead of failing later half-way through execution.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import patch_config
from langchain_core.tools import BaseTool
from pydantic import ValidationError

from rat_langchain.errors import PlanningError
from rat_langchain.plans.catalog import ToolCatalog
from rat_langchain.plans.joiner import observations
from rat_langchain.plans.plan import Plan, PlanError, Step
from rat_langchain.plans.results import PlanResult

__all__ = ["Planner", "PlanningError"]

SYSTEM_PROMPT = """You write plans of tool calls that a program executes.

Tools:
{tools}

Answer with one JSON object: {{"goal": "...", "steps": [{{"id": "s1", "tool": "<tool name>",
"args": {{...}}, "dependencies": [], "verify": false}}, ...]}}.
- Every step has a unique id (letters, digits, _ or -) and uses one of the tools above.
- A step uses an earlier step's result by writing "$<id>" (the whole result) or "$<id>.<field>"
  in its args; that makes it wait for that step. List an id in "dependencies" only when a step
  must wait for another without using its result.
- Steps that do not depend on each other run at the same time: do not chain them needlessly.
- A step may only refer to steps written before it.
- Set "verify": true on steps whose result should be checked."""


def plan_schema(tools: Sequence[str]) -> dict[str, Any]:
    """The JSON schema the LLM answers with; the tool field is an enum of the catalog."""
    step = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "unique step id, e.g. s1"},
            "tool": {"type": "string", "enum": list(tools)},
            "args": {"type": "object", "description": "tool arguments; $id.field refers"},
            "dependencies": {"type": "array", "items": {"type": "string"}},
            "verify": {"type": "boolean"},
            "description": {"type": "string"},
        },
        "required": ["id", "tool", "args"],
    }
    return {
        "title": "plan",
        "description": "A plan of tool calls.",
        "type": "object",
        "properties": {
            "goal": {"type": "string"},
            "steps": {"type": "array", "items": step, "minItems": 1},
        },
        "required": ["steps"],
    }


class Planner(Runnable[Any, Plan]):
    """Build a :class:`~rat_langchain.plans.plan.Plan` for a request with a chat model.

    Example::

        planner = Planner(pool.chat_model(model="gpt-4o-mini"), ToolCatalog(tools),
                          intent=intent_chain, router=router_chain, max_repairs=2)
        plan = await planner.acreate_plan("Compare FAISS and ScaNN")
        async for step in planner.astream_steps(request): ...   # as the LLM writes them

    ``intent`` and ``router`` are optional Runnables of the request; they run concurrently and
    their outputs are given to the LLM (and kept in ``plan.context``).
    """

    def __init__(
        self,
        llm: BaseChatModel,
        tools: ToolCatalog | Mapping[str, Any] | Sequence[BaseTool],
        *,
        intent: Runnable[Any, Any] | None = None,
        router: Runnable[Any, Any] | None = None,
        max_repairs: int = 2,
        system_prompt: str = SYSTEM_PROMPT,
        method: str = "json_schema",
    ) -> None:
        if max_repairs < 0:
            raise ValueError(f"max_repairs must be >= 0, got {max_repairs}")
        self.llm = llm
        self.catalog = tools if isinstance(tools, ToolCatalog) else ToolCatalog(tools)
        self.intent = intent
        self.router = router
        self.max_repairs = max_repairs
        self.system_prompt = system_prompt
        self.method = method

    def __repr__(self) -> str:
        return f"Planner(tools={self.catalog.names}, max_repairs={self.max_repairs})"

    # -- building the prompt -------------------------------------------------------------------

    async def _context(self, request: str, config: RunnableConfig | None) -> dict[str, Any]:
        """Intent analysis and routing, at the same time."""
        jobs = {"intent": self.intent, "route": self.router}
        tasks: dict[str, asyncio.Task[Any]] = {}
        async with asyncio.TaskGroup() as tg:
            for name, runnable in jobs.items():
                if runnable is not None:
                    tasks[name] = tg.create_task(runnable.ainvoke(request, config=config))
        return {name: task.result() for name, task in tasks.items()}

    def _messages(self, request: str, context: Mapping[str, Any]) -> list[BaseMessage]:
        system = self.system_prompt.format(tools=self.catalog.render())
        human = f"Request: {request}"
        for name, value in context.items():
            human += f"\n{name.capitalize()}: {value}"
        return [SystemMessage(system), HumanMessage(human)]

    def _structured(self, include_raw: bool) -> Runnable[Any, Any]:
        return self.llm.with_structured_output(
            plan_schema(self.catalog.names), method=self.method, include_raw=include_raw
        )

    # -- whole plans ---------------------------------------------------------------------------

    async def acreate_plan(self, request: str, *, config: RunnableConfig | None = None) -> Plan:
        """A valid plan for ``request``; PlanningError after ``max_repairs`` failed repairs."""
        request = request_text(request)
        context = await self._context(request, config)
        messages = self._messages(request, context)
        structured = self._structured(include_raw=True)
        errors: list[str] = []
        for _ in range(self.max_repairs + 1):
            out = await structured.ainvoke(messages, config=config)
            raw: AIMessage = out["raw"]
            try:
                if out.get("parsing_error") is not None or out.get("parsed") is None:
                    raise PlanError(f"the answer is not valid JSON: {out.get('parsing_error')}")
                plan = _to_plan(out["parsed"], context)
                plan.validate_tools(self.catalog.names)
                return plan
            except PlanError as exc:
                errors.append(str(exc))
            messages = [
                *messages,
                raw,
                HumanMessage(
                    f"That plan is invalid: {errors[-1]}\nWrite the whole plan again, corrected."
                ),
            ]
        raise PlanningError(
            f"no valid plan after {len(errors)} attempts; last problem: {errors[-1]}", errors
        )

    def create_plan(self, request: str) -> Plan:
        """Sync wrapper for old callers (works inside a running loop too)."""
        from rat_langchain import _portal

        return _portal.run(self.acreate_plan(request))

    # -- replanning part of a run --------------------------------------------------------------

    async def areplan(
        self,
        request: str,
        done: PlanResult,
        *,
        broken: Sequence[str],
        reason: str = "",
        prefix: str = "r1_",
        config: RunnableConfig | None = None,
    ) -> list[Step]:
        """New steps that redo what went wrong in ``done`` (a run, finished or not), keeping
        the rest: ``broken`` are the steps that failed or were refuted (their dependents were
        skipped, or are tainted), ``reason`` what the joiner found missing. The LLM sees every
        step's outcome (values cut, see ``joiner.observations``) and may refer to the steps
        still standing (succeeded and not refuted, or still running) as ``$id.field``; the new
        ids start with ``prefix``. Checked as a plan is, with ``max_repairs`` repairs."""
        request = request_text(request)
        standing = done.standing()
        text = (
            f"Request: {request}\n\nA plan for it ran, with these results so far:\n"
            f"{observations(done)}\n\n"
        )
        if broken:
            text += f"These steps failed or were refuted: {', '.join(broken)}.\n"
        if reason:
            text += f"What is still missing: {reason}\n"
        text += (
            "Write only the steps that replace what went wrong (not the steps that stand). "
            f'Their ids start with "{prefix}". They may use the results of these steps, which '
            f"are kept and will not run again: {', '.join(standing) or 'none'} "
            '("$<id>" or "$<id>.<field>").'
        )
        system = self.system_prompt.format(tools=self.catalog.render())
        messages: list[BaseMessage] = [SystemMessage(system), HumanMessage(text)]
        structured = self._structured(include_raw=True)
        errors: list[str] = []
        for _ in range(self.max_repairs + 1):
            out = await structured.ainvoke(messages, config=config)
            try:
                if out.get("parsing_error") is not None or out.get("parsed") is None:
                    raise PlanError(f"the answer is not valid JSON: {out.get('parsing_error')}")
                return self._replacement(out["parsed"], done, standing)
            except PlanError as exc:
                errors.append(str(exc))
            messages = [
                *messages,
                out["raw"],
                HumanMessage(
                    f"Those steps are invalid: {errors[-1]}\nWrite them again, corrected."
                ),
            ]
        raise PlanningError(
            f"no valid replan after {len(errors)} attempts; last problem: {errors[-1]}", errors
        )

    def _replacement(self, data: Any, done: PlanResult, standing: list[str]) -> list[Step]:
        """The replan's steps, checked: new ids, known tools, and references only to standing
        steps or to new steps written before."""
        raw = data.get("steps") if isinstance(data, Mapping) else None
        if not isinstance(raw, list) or not raw:
            raise PlanError("the answer has no steps")
        existing = {step.id for step in done.plan.steps}
        allowed = set(standing)
        steps = []
        for index, item in enumerate(raw):
            step = _to_step(item, index)
            if step.id in existing or step.id in allowed:
                raise PlanError(f"step id {step.id!r} is already used; choose a new id")
            if step.tool not in self.catalog.names:
                raise PlanError(
                    f"step {step.id!r} uses tool {step.tool!r}, which is not one of "
                    f"{sorted(self.catalog.names)}"
                )
            for dep in step.depends_on():
                if dep not in allowed:
                    why = "did not succeed" if dep in existing else "is not defined before it"
                    raise PlanError(f"step {step.id!r} refers to {dep!r}, which {why}")
            allowed.add(step.id)
            steps.append(step)
        return steps

    # -- streaming -----------------------------------------------------------------------------

    async def astream_steps(
        self, request: str, *, config: RunnableConfig | None = None
    ) -> AsyncIterator[Step]:
        """Yield each step as soon as the LLM has finished writing it, so an executor can start
        it while the rest of the plan is still being written. A step is complete when the next
        one has begun (or the answer has ended). No repair here: steps may already be running;
        an invalid step raises PlanError (``aexecute_stream`` then cancels cleanly)."""
        request = request_text(request)
        context = await self._context(request, config)
        structured = self._structured(include_raw=False)
        sent = 0
        latest: Any = None
        async for partial in structured.astream(self._messages(request, context), config=config):
            latest = partial
            steps = partial.get("steps") if isinstance(partial, dict) else None
            while isinstance(steps, list) and sent < len(steps) - 1:
                yield _to_step(steps[sent], sent)
                sent += 1
        steps = latest.get("steps") if isinstance(latest, dict) else None
        if not isinstance(steps, list) or not steps:
            raise PlanError("the planner's answer has no steps")
        for index in range(sent, len(steps)):
            yield _to_step(steps[index], index)

    # -- Runnable ------------------------------------------------------------------------------

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Plan:
        from rat_langchain import _portal

        return _portal.run(self.ainvoke(input, config, **kwargs))

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Plan:
        """A request (a string, or a dict with ``request``/``input``) to a Plan, as a traced run."""
        return await self._acall_with_config(self._ainvoke, input, config, run_type="chain")

    async def _ainvoke(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> Plan:
        child = patch_config(config, callbacks=run_manager.get_child())
        return await self.acreate_plan(input, config=child)


def request_text(value: Any) -> str:
    if isinstance(value, Mapping):
        for key in ("request", "input", "question"):
            if isinstance(value.get(key), str):
                value = value[key]
                break
    if not isinstance(value, str):
        raise TypeError(
            f"a request is a string or a dict with 'request', got {type(value).__name__}"
        )
    if not value.strip():
        raise ValueError("the request is empty")
    return value


def _to_plan(data: Any, context: Mapping[str, Any]) -> Plan:
    if not isinstance(data, Mapping):
        raise PlanError(f"the plan must be a JSON object, got {type(data).__name__}")
    try:
        return Plan.model_validate({**data, "context": dict(context)})
    except ValidationError as exc:
        raise PlanError(_validation_text(exc)) from None


def _to_step(data: Any, index: int) -> Step:
    if not isinstance(data, Mapping):
        raise PlanError(f"step {index} must be a JSON object, got {type(data).__name__}")
    try:
        return Step.model_validate(data)
    except ValidationError as exc:
        raise PlanError(f"step {index}: {_validation_text(exc)}") from None


def _validation_text(exc: ValidationError) -> str:
    """pydantic's errors as one line each, with the field path (``steps.1.id: ...``)."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)
