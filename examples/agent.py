"""A LangChain agent (``langchain.agents.create_agent``) on the pool: one keyword changes.

Runs against the embedded simulator unless OPENAI_API_KEY is set (then OPENAI_BASE_URL, if set,
or api.openai.com).

    .venv/bin/python examples/agent.py
"""

from __future__ import annotations

import asyncio

from langchain.agents import create_agent
from langchain_core.tools import tool

from rat_langchain import ClientPool, RatConfig
from rat_langchain.sim import endpoint_or_simulator


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def build_agent(pool: ClientPool) -> object:
    # before: create_agent(model=ChatOpenAI(model="gpt-4o-mini"), tools=[multiply])
    return create_agent(model=pool.chat_model(model="gpt-4o-mini"), tools=[multiply])


async def ask(pool: ClientPool, question: str) -> str:
    agent = build_agent(pool)
    state = await agent.ainvoke({"messages": [("user", question)]})  # type: ignore[attr-defined]
    return str(state["messages"][-1].content)


def main() -> None:
    with (
        endpoint_or_simulator(latency_ms=20) as endpoint,  # the simulator unless a key is set
        ClientPool(RatConfig.load().with_endpoint(**endpoint)) as pool,
    ):
        for question in ("What is 6 times 7? Use the tool.", "And 12 times 12? Use the tool."):
            # a new event loop each time: the pool's clients follow (plain ChatOpenAI fails
            # the second asyncio.run with "Event loop is closed")
            print(question, "->", asyncio.run(ask(pool, question)))


if __name__ == "__main__":
    main()
