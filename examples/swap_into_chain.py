"""Swap rat_langchain's pooled ChatOpenAI into an existing LangChain chain: one line changes.

Runs against the embedded simulator unless OPENAI_API_KEY is set (then OPENAI_BASE_URL, if set,
or api.openai.com).

    .venv/bin/python examples/swap_into_chain.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from rat_langchain import ClientPool, RatConfig, SimulatorThread


async def answer_all(pool: ClientPool, questions: list[str]) -> list[str]:
    prompt = ChatPromptTemplate.from_messages([("user", "Answer briefly: {question}")])
    # before: llm = ChatOpenAI(model="gpt-4o-mini")
    llm = pool.chat_model(model="gpt-4o-mini")
    chain = prompt | llm | StrOutputParser()
    return await chain.abatch([{"question": q} for q in questions])


def main() -> None:
    with contextlib.ExitStack() as stack:
        config = RatConfig.load()
        if not os.environ.get("OPENAI_API_KEY"):
            sim = stack.enter_context(SimulatorThread(latency_ms=50))
            endpoint = {"base_url": sim.base_url, "api_key": "sk-simulated"}
            config = RatConfig.from_dict({"endpoint": endpoint})
        pool = ClientPool(config)
        questions = [f"What is {n} squared?" for n in range(1, 21)]
        answers = asyncio.run(answer_all(pool, questions))
        for question, answer in zip(questions[:3], answers[:3], strict=True):
            print(f"{question} -> {answer}")
        print(f"... {len(answers)} answers over one pooled connection set")


if __name__ == "__main__":
    main()
