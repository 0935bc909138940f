"""The planning loop (issue 23): a joiner answers or asks for a replan; a partial replan keeps
what stands, and its steps join the running round. Scripted models, events for ordering."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import Runnable, RunnableLambda

from rat_langchain import (
    Decision,
    Joiner,
    JoinInput,
    Orchestrator,
    ParallelPlanExecutor,
    Planner,
    PlanResult,
    StepStatus,
)
from rat_langchain.plans.joiner import observations

Script = Callable[[list[BaseMessage]], Awaitable[dict[str, Any]]]


class ScriptedChat(BaseChatModel):
    """Structured output from a script: ``script(messages)`` gives the parsed answer."""

    script: Any

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("structured output only")

    def with_structured_output(  # type: ignore[override]
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[Any, Any]:
        async def answer(messages: list[BaseMessage]) -> Any:
            data = await self.script(messages)
            if include_raw:
                return {"raw": AIMessage(json.dumps(data)), "parsed": data, "parsing_error": None}
            return data

        return RunnableLambda(answer)


def text(messages: list[BaseMessage]) -> str:
    return "\n".join(str(m.content) for m in messages)


class Tools:
    """fetch (counts its calls), flaky (always fails), slow (waits for ``release``),
    combine."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.release = asyncio.Event()
        self.slow_started = asyncio.Event()
        self.combined: list[dict[str, Any]] = []
        self.combined_event = asyncio.Event()
        self.replanning = asyncio.Event()

    def mapping(self) -> dict[str, Any]:
        async def fetch(args: dict[str, Any]) -> dict[str, Any]:
            """Fetch a page."""
            key = str(args.get("q"))
            self.calls[key] = self.calls.get(key, 0) + 1
            return {"v": f"page {key}"}

        async def flaky(args: dict[str, Any]) -> dict[str, Any]:
            """Fetch a page from a mirror that is down."""
            raise ConnectionError(f"mirror down for {args.get('q')}")

        async def slow(args: dict[str, Any]) -> dict[str, Any]:
            """A long computation."""
            self.slow_started.set()
            await self.release.wait()
            return {"v": "slow done"}

        async def combine(args: dict[str, Any]) -> dict[str, Any]:
            """Combine two results."""
            self.combined.append(args)
            self.combined_event.set()
            return {"v": f"{args.get('x')} + {args.get('y')}"}

        return {"fetch": fetch, "flaky": flaky, "slow": slow, "combine": combine}


FIRST_PLAN = {
    "goal": "g",
    "steps": [
        {"id": "s1", "tool": "fetch", "args": {"q": "a"}},
        {"id": "s2", "tool": "flaky", "args": {"q": "b"}},
        {"id": "s3", "tool": "slow", "args": {}},
        {"id": "s4", "tool": "combine", "args": {"x": "$s1.v", "y": "$s2.v"}},
    ],
}
REPLACEMENT = {
    "steps": [
        {"id": "r1_a", "tool": "fetch", "args": {"q": "b"}},
        {"id": "r1_b", "tool": "combine", "args": {"x": "$s1.v", "y": "$r1_a.v"}},
    ]
}


def orchestrator(tools: Tools, script: Script, **kwargs: Any) -> Orchestrator:
    llm = ScriptedChat(script=script)
    return Orchestrator(
        Planner(llm, tools.mapping()),
        ParallelPlanExecutor(tools.mapping()),
        joiner=Joiner(llm),
        **kwargs,
    )


async def test_a_failed_step_is_replanned_at_once_and_kept_results_reach_the_new_steps() -> None:
    """s2 fails while s3 still runs: the replacement (r1_a, r1_b) is planned and started
    before s3 ends (s3 waits for r1_b to have combined: with a barrier between rounds this
    would never finish), and r1_b gets s1's result without s1 running again."""
    tools = Tools()
    prompts: dict[str, list[str]] = {"plan": [], "replan": [], "join": []}

    async def script(messages: list[BaseMessage]) -> dict[str, Any]:
        seen = text(messages)
        if seen.startswith("You decide whether"):
            prompts["join"].append(seen)
            return {"action": "answer", "answer": "page a + page b"}
        if "replace what went wrong" in seen:
            prompts["replan"].append(seen)
            return REPLACEMENT
        prompts["plan"].append(seen)
        return FIRST_PLAN

    async def released_when_combined() -> None:
        await tools.combined_event.wait()  # r1_b ran: the replacement went while s3 was running
        tools.release.set()

    async with asyncio.TaskGroup() as group:
        group.create_task(released_when_combined())
        result = await orchestrator(tools, script).aexecute("compare a and b")

    assert result.answer == "page a + page b"
    assert result.replans == 1
    assert tools.calls == {"a": 1, "b": 1}  # s1 not run again
    assert tools.combined == [{"x": "page a", "y": "page b"}]
    statuses = {i: r.status for i, r in result.steps.items()}
    assert statuses == {
        "s1": StepStatus.SUCCEEDED,
        "s2": StepStatus.FAILED,
        "s3": StepStatus.SUCCEEDED,
        "s4": StepStatus.SKIPPED,
        "r1_a": StepStatus.SUCCEEDED,
        "r1_b": StepStatus.SUCCEEDED,
    }
    assert len(prompts["plan"]) == 1
    assert len(prompts["join"]) == 1
    (replan,) = prompts["replan"]
    assert "These steps failed or were refuted: s2" in replan
    assert "mirror down for b" in replan  # the planner is told why
    assert "s1" in replan.split("will not run again:")[1]  # kept results offered
    assert "r1_b" in prompts["join"][0]  # the joiner sees the replacement's result


async def test_max_replans_bounds_the_loop_and_the_last_join_is_told_to_answer() -> None:
    tools = Tools()
    joins: list[str] = []
    replans = 0

    async def script(messages: list[BaseMessage]) -> dict[str, Any]:
        nonlocal replans
        seen = text(messages)
        if seen.startswith("You decide whether"):
            joins.append(seen)
            return {"action": "replan", "reason": "still nothing from b"}
        if "replace what went wrong" in seen:
            replans += 1
            return {"steps": [{"id": f"r{replans}_x", "tool": "flaky", "args": {"q": "b"}}]}
        return {"steps": [{"id": "s1", "tool": "flaky", "args": {"q": "b"}}]}

    result = await orchestrator(tools, script, max_replans=3).aexecute("get b")
    assert result.replans == 3
    assert replans == 3
    assert result.answer is None  # the joiner never answered
    assert [d.action for d in result.decisions] == ["replan"] * len(joins)
    assert "No replan is left" in joins[-1]
    assert all("No replan is left" not in j for j in joins[:-1])


async def test_a_full_replan_runs_everything_again() -> None:
    """``replan="full"`` (LLMCompiler's): after the round, the whole request is planned again
    and run from scratch, s1 included."""
    tools = Tools()
    plans: list[str] = []

    async def script(messages: list[BaseMessage]) -> dict[str, Any]:
        seen = text(messages)
        if seen.startswith("You decide whether"):
            if len(plans) == 1:
                return {"action": "replan", "reason": "b failed"}
            return {"action": "answer", "answer": "done"}
        plans.append(seen)
        if len(plans) == 1:
            return {"steps": [FIRST_PLAN["steps"][0], FIRST_PLAN["steps"][1]]}
        return {
            "steps": [FIRST_PLAN["steps"][0], {"id": "s2", "tool": "fetch", "args": {"q": "b"}}]
        }

    result = await orchestrator(tools, script, replan="full").aexecute("get a and b")
    assert result.answer == "done"
    assert tools.calls == {"a": 2, "b": 1}
    assert "An earlier attempt fell short: b failed" in plans[1]
    assert result.steps["s2"].status == StepStatus.SUCCEEDED


async def test_a_refuted_step_is_replanned_and_not_kept() -> None:
    """Verification refutes s1: it is replanned like a failure, and neither it nor the step
    built on it is offered to the replan as a result to keep."""
    tools = Tools()
    replans: list[str] = []

    async def script(messages: list[BaseMessage]) -> dict[str, Any]:
        seen = text(messages)
        if seen.startswith("You decide whether"):
            return {"action": "answer", "answer": "ok"}
        if "replace what went wrong" in seen:
            replans.append(seen)
            return {"steps": [{"id": "r1_a", "tool": "fetch", "args": {"q": "a2"}}]}
        return {
            "steps": [
                {"id": "s1", "tool": "fetch", "args": {"q": "a"}, "verify": True},
                {"id": "s2", "tool": "combine", "args": {"x": "$s1.v", "y": "z"}},
            ]
        }

    async def refute_a(payload: dict[str, Any]) -> dict[str, Any]:
        return {"passed": payload["step"] != "s1"}

    llm = ScriptedChat(script=script)
    orch = Orchestrator(
        Planner(llm, tools.mapping()),
        ParallelPlanExecutor(tools.mapping(), verifier=refute_a),
        joiner=Joiner(llm),
    )
    result = await orch.aexecute("get a")
    (replan,) = replans
    assert "These steps failed or were refuted: s1" in replan
    assert "refuted by verification" in replan
    assert replan.split("will not run again:")[1].split('("$')[0].strip() == "none"
    assert result.steps["r1_a"].status == StepStatus.SUCCEEDED
    assert result.standing() == ["r1_a"]


async def test_a_cancelled_orchestrator_leaves_no_task_behind() -> None:
    tools = Tools()

    async def script(messages: list[BaseMessage]) -> dict[str, Any]:
        seen = text(messages)
        if "replace what went wrong" in seen:
            tools.replanning.set()
            await asyncio.Event().wait()  # a replan still being written when cancelled
        return FIRST_PLAN

    before = asyncio.all_tasks()
    task = asyncio.create_task(orchestrator(tools, script).aexecute("x"))
    await tools.slow_started.wait()
    await tools.replanning.wait()  # s3 running, s2's replacement being written
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() - before - {task} == set()


def test_the_joiner_sees_bounded_values_and_errors() -> None:
    """Tool results are untrusted and of any size: each is cut before it reaches a prompt."""
    from rat_langchain import Plan, Step, StepResult

    plan = Plan(steps=[Step(id="s1", tool="t"), Step(id="s2", tool="t")])
    result = PlanResult(
        plan=plan,
        steps={
            "s1": StepResult("s1", StepStatus.SUCCEEDED, "x" * 100_000),
            "s2": StepResult("s2", StepStatus.FAILED, error=ValueError("y" * 100_000)),
        },
    )
    seen = observations(result, max_chars=500)
    assert len(seen) < 1500
    assert "more chars" in seen
    messages = Joiner(ScriptedChat(script=None), max_chars=500).messages(
        JoinInput("q", result, last=True)
    )
    assert "No replan is left" in str(messages[-1].content)


def test_a_joiner_answer_that_is_not_a_decision_is_a_planning_error() -> None:
    from rat_langchain import PlanningError
    from rat_langchain.plans.joiner import as_decision

    assert as_decision({"action": "answer", "answer": "a"}) == Decision(action="answer", answer="a")
    with pytest.raises(PlanningError, match="not a decision"):
        as_decision({"action": "maybe"})
    with pytest.raises(PlanningError, match="str"):
        as_decision("answer")


async def test_a_streamed_step_on_one_failed_and_one_running_step_is_skipped_cleanly() -> None:
    """A step added with one dependency failed and another still running is skipped at once;
    the running one finishing must not look for it (it was registered as waiting: KeyError)."""
    tools = Tools()
    executor = ParallelPlanExecutor(tools.mapping())

    async def steps() -> Any:
        from rat_langchain import Step

        yield Step(id="s3", tool="slow", args={})
        yield Step(id="s2", tool="flaky", args={"q": "b"})
        await tools.slow_started.wait()
        while "s2" not in seen:  # noqa: ASYNC110 - the executor's own result, no event for it
            await asyncio.sleep(0)
        yield Step(id="s4", tool="combine", args={"x": "$s3.v", "y": "$s2.v"})
        tools.release.set()

    seen: dict[str, Any] = {}
    executor.callbacks.append(_Seen(seen))
    result = await executor.aexecute_stream(steps())
    assert result.steps["s4"].status == StepStatus.SKIPPED
    assert result.steps["s3"].status == StepStatus.SUCCEEDED


class _Seen:
    def __init__(self, seen: dict[str, Any]) -> None:
        self.seen = seen

    def on_step_start(self, step: Any) -> None:
        pass

    def on_step_end(self, step: Any, result: Any) -> None:
        self.seen[step.id] = result

    def on_verified(self, step: Any, verdict: Any) -> None:
        pass
