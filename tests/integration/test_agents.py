"""Agents and graphs on ``pool.chat_model()``: ``langchain.agents.create_agent`` and a
two-branch LangGraph graph, through invoke, ainvoke, astream_events and repeated asyncio.run."""

from __future__ import annotations

import asyncio
import operator
import runpy
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph

from rat_langchain import ClientPool, RatConfig
from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY

ROOT = Path(__file__).resolve().parents[2]


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def _pool(sim: SimulatorThread) -> ClientPool:
    return ClientPool(
        RatConfig.from_dict({"endpoint": {"base_url": sim.base_url, "api_key": API_KEY}}, env={})
    )


def _tool_results(state: dict[str, Any]) -> list[str]:
    return [str(m.content) for m in state["messages"] if isinstance(m, ToolMessage)]


def test_create_agent_calls_the_tool_sync_async_and_across_event_loops(
    sim: SimulatorThread,
) -> None:
    with _pool(sim) as pool:
        agent = create_agent(model=pool.chat_model(), tools=[multiply])
        state = agent.invoke({"messages": [("user", "What is 6 times 7? Use the tool.")]})
        assert _tool_results(state) == ["42"]  # the tool ran with the prompt's numbers
        for a, b in ((3, 4), (5, 5)):  # a new event loop each time
            question = {"messages": [("user", f"What is {a} times {b}?")]}
            state = asyncio.run(agent.ainvoke(question))
            assert _tool_results(state) == [str(a * b)]

        async def events() -> list[str]:
            question = {"messages": [("user", "What is 2 times 9?")]}
            return [e["event"] async for e in agent.astream_events(question, version="v2")]

        kinds = asyncio.run(events())
        assert "on_tool_end" in kinds
        assert "on_chat_model_stream" in kinds or "on_chat_model_end" in kinds


class Branches(TypedDict):
    question: str
    answers: Annotated[list[str], operator.add]


def test_a_two_branch_graph_runs_both_branches_on_the_pool(sim: SimulatorThread) -> None:
    with _pool(sim) as pool:
        llm = pool.chat_model()

        def branch(name: str, prefix: str) -> RunnableLambda[Branches, dict[str, list[str]]]:
            def sync(state: Branches) -> dict[str, list[str]]:
                return {"answers": [f"{name}: {llm.invoke(prefix + state['question']).content}"]}

            async def run(state: Branches) -> dict[str, list[str]]:
                reply = await llm.ainvoke(prefix + state["question"])
                return {"answers": [f"{name}: {reply.content}"]}

            return RunnableLambda(sync, afunc=run)

        graph = StateGraph(Branches)
        graph.add_node("short", branch("short", "Briefly: "))
        graph.add_node("detailed", branch("detailed", "In detail: "))
        graph.add_edge(START, "short")
        graph.add_edge(START, "detailed")
        graph.add_edge("short", END)
        graph.add_edge("detailed", END)
        app = graph.compile()
        for _ in range(3):  # repeated asyncio.run: the pool's clients follow each loop
            state = asyncio.run(app.ainvoke({"question": "why is the sky blue", "answers": []}))
            assert sorted(a.split(":")[0] for a in state["answers"]) == ["detailed", "short"]
        state = app.invoke({"question": "why", "answers": []})  # sync, from the portal loop
        assert len(state["answers"]) == 2

        async def events() -> int:
            stream = app.astream_events({"question": "why", "answers": []}, version="v2")
            return sum([e["event"] == "on_chat_model_end" async for e in stream])

        assert asyncio.run(events()) == 2
        calls = pool.metrics.series(sim.base_url, llm.model_name)["calls"]
        assert calls == 3 * 2 + 2 + 2  # every model call went through the guard


def test_the_agent_example_runs(capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    runpy.run_path(str(ROOT / "examples" / "agent.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("->") == 2
