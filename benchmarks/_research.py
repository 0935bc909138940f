"""Scripted research requests for ``bench_plans``: the planning loop four ways (issue 23).

Each request asks to compare k sources (3-5): search each, read each (verified), compare them.
The "LLMs" are scripted and only sleep their latency (planner 2 s, joiner 1 s, one tool-calling
turn of an agent 1 s, all times ``SCALE``); tools sleep 0.2-2 s, 10 % of their calls fail
transiently and 5 % of reads are refuted by verification, decided by a hash of (request, call,
attempt) so that every way meets the same luck for the same attempt. Tokens are the prompts'
and answers' characters / 4.

Ways: (a) sequential tool calling (``langchain.agents.create_agent``, one tool call per turn,
no verification); (b) LLMCompiler-style (whole plan, then execute with verification before
dependents, join, full replan); (c) this project, full replans (streamed plan, background
verification); (d) this project, partial replans.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import tool

from rat_langchain import (
    Decision,
    Joiner,
    JoinInput,
    Orchestrator,
    ParallelPlanExecutor,
    Planner,
)

SCALE = 0.5  # every latency below is multiplied by this (the benchmark's wall time)
PLANNER_S, JOINER_S, TURN_S, VERIFY_S = 2.0, 1.0, 1.0, 0.2
FAIL, REFUTE = 0.10, 0.05
MAX_REPLANS = 3


def _chance(*parts: object) -> float:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2**64


@dataclass
class Ledger:
    """What one way spent: LLM calls and tokens."""

    calls: int = 0
    tokens: int = 0

    def charge(self, prompt: str, answer: str) -> None:
        self.calls += 1
        self.tokens += (len(prompt) + len(answer)) // 4


@dataclass
class World:
    """The tools of one way, with their attempt counters (so retries meet fresh luck)."""

    attempts: dict[tuple[int, str, str], int] = field(default_factory=dict)

    async def call(self, request: int, name: str, arg: str) -> dict[str, Any]:
        n = self.attempts.get((request, name, arg), 0) + 1
        self.attempts[request, name, arg] = n
        await asyncio.sleep(SCALE * (0.2 + 1.8 * _chance(request, name, arg, "latency")))
        if _chance(request, name, arg, n, "fail") < FAIL:
            raise ConnectionError(f"{name}({arg}) failed (transient)")
        if name == "search":
            return {"url": f"https://example.org/{arg}"}
        if name == "read":
            bad = _chance(request, name, arg, n, "refute") < REFUTE
            return {"text": f"{'BAD ' if bad else ''}notes on {arg}"}
        return {"verdict": f"comparison of {arg}"}

    def plan_tools(self) -> dict[str, Any]:
        async def search(args: dict[str, Any]) -> dict[str, Any]:
            """Search the web for a source."""
            return await self.call(int(args["request"]), "search", str(args["q"]))

        async def read(args: dict[str, Any]) -> dict[str, Any]:
            """Read a page."""
            return await self.call(int(args["request"]), "read", str(args["url"]))

        async def compare(args: dict[str, Any]) -> dict[str, Any]:
            """Compare notes."""
            texts = args["texts"]
            return await self.call(int(args["request"]), "compare", str(len(texts)))

        return {"search": search, "read": read, "compare": compare}


async def _verify(payload: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(SCALE * VERIFY_S)
    text = json.dumps(payload.get("output"), default=str)
    return {"passed": "BAD" not in text}


def _sources(request: int) -> list[str]:
    return [f"src{request}-{j}" for j in range(3 + request % 3)]


def _template(request: int) -> dict[str, dict[str, Any]]:
    """role -> step (id = role) of the request's plan: search each source, read each, compare."""
    steps: dict[str, dict[str, Any]] = {}
    sources = _sources(request)
    for j, source in enumerate(sources):
        steps[f"s{j}"] = {"tool": "search", "args": {"request": request, "q": source}}
    for j in range(len(sources)):
        steps[f"r{j}"] = {
            "tool": "read",
            "args": {"request": request, "url": f"$s{j}.url"},
            "verify": True,
        }
    steps["c"] = {
        "tool": "compare",
        "args": {"request": request, "texts": [f"$r{j}.text" for j in range(len(sources))]},
    }
    return steps


def _steps(request: int, roles: Sequence[str], ids: dict[str, str]) -> list[dict[str, Any]]:
    """The template's steps for ``roles``, with ids and references renamed by ``ids``."""

    def rename(value: Any) -> Any:
        if isinstance(value, str):
            return re.sub(r"\$([a-z]\d*)", lambda m: "$" + ids.get(m.group(1), m.group(1)), value)
        if isinstance(value, list):
            return [rename(v) for v in value]
        if isinstance(value, dict):
            return {k: rename(v) for k, v in value.items()}
        return value

    template = _template(request)
    return [{"id": ids[role], **rename(template[role])} for role in roles]


class _Streamed(Runnable[Any, Any]):
    """A planner's structured output: the whole answer after ``seconds``, or streamed, its
    steps appearing evenly over that time (as a model writes them)."""

    def __init__(self, model: ScriptedPlanner, include_raw: bool) -> None:
        self.model = model
        self.include_raw = include_raw

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        data, prompt = self.model.answer(input)
        await asyncio.sleep(SCALE * PLANNER_S)
        self.model.ledger.charge(prompt, json.dumps(data))
        if self.include_raw:
            return {"raw": AIMessage(json.dumps(data)), "parsed": data, "parsing_error": None}
        return data

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        data, prompt = self.model.answer(input)
        steps = data["steps"]
        for n in range(1, len(steps) + 1):
            await asyncio.sleep(SCALE * PLANNER_S / len(steps))
            yield {"steps": steps[:n]}
        self.model.ledger.charge(prompt, json.dumps(data))


class ScriptedPlanner(BaseChatModel):
    """Plans a research request from its template; a replan re-issues what does not stand."""

    ledger: Any

    @property
    def _llm_type(self) -> str:
        return "scripted-planner"

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    def with_structured_output(  # type: ignore[override]
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[Any, Any]:
        return _Streamed(self, include_raw)

    def answer(self, messages: list[BaseMessage]) -> tuple[dict[str, Any], str]:
        prompt = "\n".join(str(m.content) for m in messages)
        match = re.search(r"research (\d+)", prompt)
        assert match is not None
        request = int(match.group(1))
        roles = list(_template(request))
        if "replace what went wrong" not in prompt:
            return {"steps": _steps(request, roles, {r: r for r in roles})}, prompt
        prefix = re.search(r'ids start with "([^"]+)"', prompt)
        assert prefix is not None
        standing_text = prompt.split("will not run again:")[1].split('("$')[0]
        standing = [s.strip() for s in standing_text.split(",") if s.strip() not in ("", "none")]
        ids = {re.sub(r"^r\d+_", "", s): s for s in standing}  # role -> the id that holds it
        missing = [role for role in roles if role not in ids]
        ids.update({role: f"{prefix.group(1)}{role}" for role in missing})
        return {"steps": _steps(request, missing, ids)}, prompt


class ScriptedJoiner(Runnable[JoinInput, Decision]):
    """Answers when a comparison stands (its reads verified), else asks for what is missing."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.prompt = Joiner(ScriptedPlanner(ledger=ledger))  # for the prompt it would get

    def invoke(self, input: JoinInput, config: RunnableConfig | None = None, **kw: Any) -> Any:
        raise NotImplementedError

    async def ainvoke(
        self, input: JoinInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Decision:
        await asyncio.sleep(SCALE * JOINER_S)
        standing = set(input.result.standing())
        done = any(
            step.tool == "compare" and step.id in standing and input.result.steps[step.id].value
            for step in input.result.plan.steps
        )
        decision = (
            Decision(action="answer", answer="the comparison")
            if done
            else Decision(action="replan", reason="the comparison is missing or unverified")
        )
        prompt = "\n".join(str(m.content) for m in self.prompt.messages(input))
        self.ledger.charge(prompt, decision.model_dump_json())
        return decision


class ScriptedAgentModel(BaseChatModel):
    """A tool-calling model for create_agent: one call per turn, in the template's order
    (each search, each read, the comparison), retrying a call whose tool reported an error."""

    ledger: Any
    request: int

    @property
    def _llm_type(self) -> str:
        return "scripted-agent"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        await asyncio.sleep(SCALE * TURN_S)
        done = {
            m.tool_call_id.split(":")[0]
            for m in messages
            if isinstance(m, ToolMessage) and not str(m.content).startswith("error")
        }
        sources = _sources(self.request)
        calls = [(f"s{j}", "search", {"q": s}) for j, s in enumerate(sources)]
        calls += [
            (f"r{j}", "read", {"url": f"https://example.org/{s}"}) for j, s in enumerate(sources)
        ]
        calls += [("c", "compare", {"n": len(sources)})]
        prompt = "\n".join(str(m.content) for m in messages)
        for role, name, args in calls:
            if role not in done:
                call_id = f"{role}:{len(messages)}"
                message = AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id}])
                self.ledger.charge(prompt, json.dumps(args))
                return ChatResult(generations=[ChatGeneration(message=message)])
        self.ledger.charge(prompt, "the comparison")
        return ChatResult(generations=[ChatGeneration(message=AIMessage("the comparison"))])


def _agent_tools(world: World, request: int) -> list[Any]:
    async def guarded(name: str, arg: str) -> str:
        try:
            return json.dumps(await world.call(request, name, arg))
        except ConnectionError as exc:
            return f"error: {exc}"

    @tool
    async def search(q: str) -> str:
        """Search the web for a source."""
        return await guarded("search", q)

    @tool
    async def read(url: str) -> str:
        """Read a page."""
        return await guarded("read", url)

    @tool
    async def compare(n: int) -> str:
        """Compare the notes read."""
        return await guarded("compare", str(n))

    return [search, read, compare]


async def _sequential(request: int, ledger: Ledger, world: World) -> bool:
    model = ScriptedAgentModel(ledger=ledger, request=request)
    agent = create_agent(model=model, tools=_agent_tools(world, request))
    state = await agent.ainvoke(
        {"messages": [("user", f"research {request}: compare the sources")]},
        config={"recursion_limit": 200},
    )
    return str(state["messages"][-1].content) == "the comparison"


def _orchestrator(way: str, ledger: Ledger, world: World) -> Orchestrator:
    planner = Planner(ScriptedPlanner(ledger=ledger), world.plan_tools())
    executor = ParallelPlanExecutor(
        world.plan_tools(),
        verifier=_verify,
        background_verification=way != "llmcompiler",
        max_parallel_steps=16,
    )
    return Orchestrator(
        planner,
        executor,
        streaming=way != "llmcompiler",
        joiner=ScriptedJoiner(ledger),
        max_replans=MAX_REPLANS,
        replan="partial" if way == "partial" else "full",
    )


@dataclass
class Outcome:
    answered: int
    calls: int
    tokens: int
    makespans: list[float]


async def run_way(way: str, requests: int) -> Outcome:
    ledger, world = Ledger(), World()
    makespans: list[float] = []
    answered = 0

    async def one(request: int) -> None:
        nonlocal answered
        started = time.perf_counter()
        if way == "sequential":
            ok = await _sequential(request, ledger, world)
        else:
            orch = _orchestrator(way, ledger, world)
            result = await orch.aexecute(f"research {request}: compare the sources")
            ok = result.answer is not None
        makespans.append(time.perf_counter() - started)
        answered += ok

    async with asyncio.TaskGroup() as group:
        for request in range(requests):
            group.create_task(one(request))
    return Outcome(answered, ledger.calls, ledger.tokens, makespans)


WAYS = (
    ("sequential", "(a) sequential tool calling (create_agent)"),
    ("llmcompiler", "(b) LLMCompiler-style: plan, execute, join, full replan"),
    ("full", "(c) this project, full replans (streamed, background verification)"),
    ("partial", "(d) this project, partial replans"),
)


async def research(requests: int = 20) -> None:
    print(
        f"{requests} scripted research requests, run at once per way; latencies x{SCALE}: "
        f"planner {PLANNER_S * SCALE:g} s, joiner {JOINER_S * SCALE:g} s, an agent's turn "
        f"{TURN_S * SCALE:g} s, tools {0.2 * SCALE:g}-{2 * SCALE:g} s; {FAIL:.0%} of tool "
        f"calls fail, {REFUTE:.0%} of reads refuted; max_replans {MAX_REPLANS}."
    )
    print()
    print(
        "| way | answered | LLM calls | tokens | median makespan (s) | p90 (s) | makespan / (d)'s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    outcomes = {way: await run_way(way, requests) for way, _ in WAYS}
    partial = statistics.median(outcomes["partial"].makespans)
    for way, title in WAYS:
        o = outcomes[way]
        median = statistics.median(o.makespans)
        p90 = statistics.quantiles(o.makespans, n=10)[-1]
        print(
            f"| {title} | {o.answered}/{requests} | {o.calls} | {o.tokens} | {median:.2f} "
            f"| {p90:.2f} | {median / partial:.2f} |"
        )
