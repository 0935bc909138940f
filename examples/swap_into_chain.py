"""Swap rat_langchain's pooled ChatOpenAI into an existing LangChain chain: one line changes.

Runs against the embedded simulator unless OPENAI_API_KEY is set (then OPENAI_BASE_URL, if set,
or api.openai.com).

    .venv/bin/python examples/swap_into_chain.py
"""

from __future__ import annotations

import asyncio

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from rat_langchain import ClientPool, RatConfig
from rat_langchain.sim import endpoint_or_simulator


async def answer_all(pool: ClientPool, questions: list[str]) -> list[str]:
    prompt = ChatPromptTemplate.from_messages([("user", "Answer briefly: {question}")])
    # before: llm = ChatOpenAI(model="gpt-4o-mini")
    llm = pool.chat_model(model="gpt-4o-mini")
    chain = prompt | llm | StrOutputParser()
    return await chain.abatch([{"question": q} for q in questions])


def main() -> None:
    with endpoint_or_simulator(latency_ms=50) as endpoint:  # the simulator unless a key is set
        config = RatConfig.load().with_endpoint(**endpoint)
        pool = ClientPool(config)
        questions = [f"What is {n} squared?" for n in range(1, 21)]
        answers = asyncio.run(answer_all(pool, questions))
        for question, answer in zip(questions[:3], answers[:3], strict=True):
            print(f"{question} -> {answer}")
        print(f"... {len(answers)} answers over one pooled connection set")


if __name__ == "__main__":
    main()
