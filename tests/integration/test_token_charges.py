"""What a request costs: the simulator charges what a real endpoint charges (messages, tools,
response format, the completion budget), counted with its own code; the limiter's estimate,
counted by the library's, must agree with it, or TPM limits would be missed."""

from __future__ import annotations

from typing import Any

from langchain_core.tools import tool
from pydantic import BaseModel

from rat_langchain import ClientPool, RatConfig
from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY


@tool
def lookup_weather(city: str, unit: str = "celsius", days: int = 3) -> str:
    """Look up the weather forecast of a city for the next few days, in the unit asked for."""
    return f"{city}: sunny"


class Answer(BaseModel):
    """An answer with the sources it rests on."""

    text: str
    sources: list[str]
    confidence: float


def _spied_pool(sim: SimulatorThread) -> tuple[ClientPool, list[int]]:
    config = RatConfig.from_dict(
        {
            "endpoint": {"base_url": sim.base_url, "api_key": API_KEY},
            "performance": {"rate_limiting": {"tpm_limit": 10_000_000, "rpm_limit": 100_000}},
        },
        env={},
    )
    pool = ClientPool(config)
    charged: list[int] = []
    limiter: Any = pool.limiter
    acquire = limiter.acquire

    async def spy(key: Any, tokens: int = 0) -> Any:
        charged.append(tokens)
        return await acquire(key, tokens)

    limiter.acquire = spy
    return pool, charged


async def test_tools_are_charged_by_the_server_and_estimated_alike(sim: SimulatorThread) -> None:
    pool, charged = _spied_pool(sim)
    llm = pool.chat_model(max_tokens=40)
    question = "What will the weather be in Paris?"
    await llm.ainvoke(question)
    plain_prompt = sim.stats().prompt_tokens
    sim.reset_stats()
    await llm.bind_tools([lookup_weather]).ainvoke(question)
    tools_prompt = sim.stats().prompt_tokens
    await pool.aclose()
    tool_cost = tools_prompt - plain_prompt
    assert tool_cost > 40  # the definition (name, description, JSON schema) is billed
    estimates = [tokens - 40 for tokens in charged]  # less the completion budget
    assert abs(estimates[0] - plain_prompt) <= 3
    assert abs(estimates[1] - tools_prompt) <= 3  # the limiter counts the tools too


async def test_a_response_schema_is_charged_and_estimated_alike(sim: SimulatorThread) -> None:
    pool, charged = _spied_pool(sim)
    llm = pool.chat_model(max_tokens=60)
    structured = llm.with_structured_output(Answer, method="json_schema")
    await structured.ainvoke("Why is the sky blue?")
    billed = sim.stats().prompt_tokens
    await pool.aclose()
    assert billed > 40  # the schema is billed on top of a short question
    assert abs((charged[0] - 60) - billed) <= 3
