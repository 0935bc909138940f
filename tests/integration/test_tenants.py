"""Two API keys on one endpoint are two accounts: one tenant's 429s, quota errors or open
breaker never slow or fail the other (issue 21, item 3)."""

from __future__ import annotations

import asyncio

import pytest

from rat_langchain import ClientPool, RatConfig
from rat_langchain.errors import CircuitOpenError
from rat_langchain.guards.breaker import State
from rat_langchain.guards.key import Key, tenant_of
from rat_langchain.sim import SimulatorThread

KEY_A = "sk-tenant-a-0123456789"
KEY_B = "sk-tenant-b-9876543210"


def _pool(sim: SimulatorThread) -> ClientPool:
    return ClientPool(
        RatConfig.from_dict(
            {
                "endpoint": {"base_url": sim.base_url, "api_key": KEY_A},
                "performance": {"retries": {"initial_backoff_s": 0.05, "max_attempts": 3}},
            },
            env={},
        )
    )


def test_a_fingerprint_tells_tenants_apart_and_never_holds_the_key() -> None:
    a, b = tenant_of(KEY_A), tenant_of(KEY_B)
    assert a
    assert b
    assert a != b
    assert tenant_of(KEY_A) == a
    assert KEY_A not in a
    assert "0123456789" not in str(Key("u", "m", a))
    assert tenant_of(None) == tenant_of("") == ""


def test_names_shared_through_redis_cannot_collide() -> None:
    """Endpoint ``…/v1/x`` + model ``y`` and endpoint ``…/v1`` + model ``x/y`` print alike
    but are different quotas: their shared ids differ."""
    one, two = Key("http://h/v1/x", "y"), Key("http://h/v1", "x/y")
    assert str(one) == str(two)
    assert one.id != two.id
    assert Key("u", "m") == ("u", "m", "")
    assert Key.of(("u", "m")) == Key("u", "m")
    with pytest.raises(ValueError, match="a key is"):
        Key.of(("u",))  # type: ignore[arg-type]


async def test_one_tenants_limit_and_quota_never_touch_another(sim: SimulatorThread) -> None:
    """Tenant B is limited to 1 request a second (announced), tenant C is out of credit; tenant
    A is unlimited. A's 60 calls all succeed, its breaker stays closed, and they are done while
    B's 8 calls are still being paced (B's limit is not A's)."""
    sim.configure(
        latency_ms=20,
        limit_window_s=1.0,
        tenants={KEY_A: {}, KEY_B: {"rpm": 60}, "sk-tenant-c": {"out_of_quota": True}},
    )
    async with _pool(sim) as pool:
        a = pool.chat_model()
        b = pool.chat_model(api_key=KEY_B)
        c = pool.chat_model(api_key="sk-tenant-c")
        for _ in range(3):  # C's breaker opens on insufficient_quota
            with pytest.raises(Exception):  # noqa: B017,PT011 (RateLimitError, then CircuitOpen)
                await c.ainvoke("hi")
        with pytest.raises(CircuitOpenError):
            await c.ainvoke("hi")
        b_done: list[int] = []

        async def call_b() -> None:
            await b.ainvoke("hi")
            b_done.append(1)

        async with asyncio.TaskGroup() as group:
            b_calls = [group.create_task(call_b()) for _ in range(8)]
            answers = await asyncio.gather(*(a.ainvoke("hi") for _ in range(60)))
            b_when_a_done = len(b_done)
            await asyncio.gather(*b_calls)
        assert len(answers) == 60
        assert all(x.content for x in answers)
        assert b_when_a_done < 8  # A was not held to B's pace
        assert a.guard is not None
        assert b.guard is not None
        assert c.guard is not None
        assert a.guard.breaker is not None
        assert a.guard.breaker.state == State.CLOSED
        assert c.guard.breaker is not None
        assert c.guard.breaker.state != State.CLOSED
        assert a.guard.key.tenant == tenant_of(KEY_A) != b.guard.key.tenant
        page = pool.metrics.to_prometheus()
        assert KEY_A not in page
        assert KEY_B not in page


def test_resilient_keys_a_wrapped_openai_model_by_its_endpoint_model_and_tenant() -> None:
    """``resilient(ChatOpenAI(api_key=a))`` and the same with key ``b`` were both keyed
    ``ChatOpenAI``: one limiter and one breaker for two accounts. The default key is now the
    model's (endpoint, model, tenant), found through bindings and chains too."""
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_openai import ChatOpenAI

    from rat_langchain import resilient
    from rat_langchain.guards import build_guards

    guards = build_guards(RatConfig.from_dict({}, env={}))

    def llm(key: str, model: str = "gpt-4o-mini") -> ChatOpenAI:
        return ChatOpenAI(model=model, base_url="http://h/v1", api_key=key)

    a, b = resilient(llm(KEY_A), guards=guards), resilient(llm(KEY_B), guards=guards)
    assert a.guard.key == Key("http://h/v1", "gpt-4o-mini", tenant_of(KEY_A))
    assert b.guard.key.tenant == tenant_of(KEY_B)
    assert a.guard.breaker is not b.guard.breaker
    prompt = ChatPromptTemplate.from_messages([("user", "{q}")])
    chain = resilient(prompt | llm(KEY_A).bind(stop=["x"]), guards=guards)
    assert chain.guard.key == a.guard.key
    assert chain.guard.breaker is a.guard.breaker  # one account, one quota, however wrapped
    two_models = resilient(
        prompt | llm(KEY_A) | (lambda m: m.content) | llm(KEY_A, "gpt-4o"), guards=guards
    )
    assert two_models.guard.key == Key("", "RunnableSequence")  # no one model's quota
