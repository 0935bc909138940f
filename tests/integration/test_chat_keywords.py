"""``pool.chat_model(**kwargs)`` takes every ``ChatOpenAI`` keyword, under either of its names,
with ``ChatOpenAI``'s meaning; retries are counted once; every copy keeps the policy."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest
from langchain_core.callbacks import StdOutCallbackHandler
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.runnables import ConfigurableField
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from rat_langchain import ClientPool, RatConfig
from rat_langchain.pool.pool import _ALIASES, _OWN_CLIENT
from rat_langchain.sim import Reply, SimulatorThread
from tests.conftest import API_KEY

# A value for every ChatOpenAI field that is neither an alias pair nor a client of its own.
SAMPLES: dict[str, Any] = {
    "name": "my-model",
    "cache": False,
    "verbose": True,
    "tags": ["t"],
    "metadata": {"m": 1},
    "disable_streaming": True,
    "output_version": "v1",
    "temperature": 0.3,
    "model_kwargs": {"user": "u1"},
    "stream_usage": True,
    "presence_penalty": 0.1,
    "frequency_penalty": 0.2,
    "seed": 7,
    "logprobs": True,
    "top_logprobs": 2,
    "logit_bias": {1: 2},
    "streaming": True,
    "n": 1,
    "top_p": 0.9,
    "reasoning_effort": "low",
    "reasoning": {"effort": "low"},
    "verbosity": "low",
    "tiktoken_model_name": "gpt-4o",
    "stream_chunk_timeout": 12.0,
    "extra_body": {"x": 1},
    "include_response_headers": False,
    "disabled_params": {"parallel_tool_calls": None},
    "context_management": [{"type": "compaction"}],
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_options": {"k": 1},
    "service_tier": "flex",
    "store": True,
    "truncation": "auto",
    "use_previous_response_id": True,
    "use_responses_api": False,
    "max_retries": 2,
    "default_headers": {"X-Team": "blue"},
    "default_query": {"q": "1"},
    "model_name": "gpt-4o",
    "openai_api_key": SecretStr("sk-other"),
    "openai_api_base": "http://example.invalid/v1",
    "openai_organization": "org-1",
    "request_timeout": 33.0,
    "stop": ["END"],
    "max_tokens": 99,
    "callbacks": [StdOutCallbackHandler()],
    "custom_get_token_ids": len,
    "rate_limiter": InMemoryRateLimiter(requests_per_second=100),
    "profile": {"max_input_tokens": 1234},
}


@pytest.fixture
def pool(sim: SimulatorThread) -> Any:
    config = RatConfig.from_dict(
        {
            "endpoint": {"base_url": sim.base_url, "api_key": API_KEY},
            "performance": {
                "rate_limiting": {"enabled": False},
                "retries": {"initial_backoff_s": 0.01, "max_backoff_s": 0.02},
            },
        },
        env={},
    )
    with ClientPool(config) as made:
        yield made


def test_every_chat_openai_field_and_alias_is_honoured(pool: ClientPool) -> None:
    fields = ChatOpenAI.model_fields
    for name, field in fields.items():
        if name in _OWN_CLIENT:
            with pytest.raises(TypeError, match=f"chat_model\\({name}="):
                pool.chat_model(**{name: object()})
            continue
        assert name in SAMPLES, f"no sample for ChatOpenAI.{name}: add one"
        value = SAMPLES[name]
        for keyword in filter(None, (name, field.alias)):
            llm = pool.chat_model(**{keyword: value})
            got = getattr(llm, name)
            if isinstance(value, SecretStr):
                assert got.get_secret_value() == value.get_secret_value(), keyword
            elif name == "max_retries":
                assert llm.guard is not None
                assert llm.guard.retry is not None
                assert llm.guard.retry.max_attempts == value + 1  # ours, not the SDK's
                assert llm.root_async_client.max_retries == 0
            elif name == "metadata":
                assert value.items() <= got.items(), keyword  # LangChain adds its versions
            else:
                assert got == value, keyword
    assert set(_ALIASES) <= {f.alias for f in fields.values()} | set(fields)


def test_client_options_reach_the_requests(pool: ClientPool, sim: SimulatorThread) -> None:
    llm = pool.chat_model(timeout=7.5, default_headers={"X-Team": "blue"}, default_query={"q": "1"})
    client = llm.root_async_client
    assert isinstance(client.timeout, httpx2.Timeout | float)
    timeout = client.timeout
    assert (timeout.read if isinstance(timeout, httpx2.Timeout) else timeout) == 7.5
    assert client.default_headers["X-Team"] == "blue"
    assert llm.invoke("hi").content
    default = pool.chat_model()
    assert default.root_async_client.default_headers.get("X-Team") is None  # not shared


def test_one_setting_twice_with_two_values_is_an_error(pool: ClientPool) -> None:
    with pytest.raises(TypeError, match="model_name= and model="):
        pool.chat_model(model="a", model_name="b")
    with pytest.raises(TypeError, match="request_timeout= and timeout="):
        pool.chat_model(timeout=1, request_timeout=2)
    assert pool.chat_model(model="a", model_name="a").model_name == "a"


def test_max_retries_means_at_most_n_plus_1_requests(
    pool: ClientPool, sim: SimulatorThread
) -> None:
    sim.configure(unavailable_rate=1.0)  # every request answered 503
    with pytest.raises(openai.InternalServerError):
        pool.chat_model(max_retries=2).invoke("hi")
    assert sim.stats().count("chat", 503) == 3
    sim.reset_stats()
    with pytest.raises(openai.InternalServerError):
        pool.chat_model(max_retries=0).invoke("hi")
    assert sim.stats().count("chat", 503) == 1


def test_copies_keep_the_policy(pool: ClientPool, sim: SimulatorThread) -> None:
    llm = pool.chat_model(max_retries=3)
    configurable = llm.configurable_fields(
        temperature=ConfigurableField(id="temperature", name="temperature")
    )
    sim.push(Reply(status=503), Reply(status=503))
    answer = configurable.with_config(configurable={"temperature": 0.1}).invoke("hi")
    assert answer.content  # two 503s retried by the copy LangChain built
    copies = [
        llm.model_copy(),
        llm.bind(temperature=0.2).bound,  # type: ignore[attr-defined]
        llm.with_config(tags=["x"]).bound,  # type: ignore[attr-defined]
    ]
    for copy in copies:
        assert copy.guard is not None
        assert copy.guard.retry is not None
        assert copy.guard.retry.max_attempts == 4
    alternative = llm.configurable_alternatives(
        ConfigurableField(id="which"), default_key="a", b=pool.chat_model(model="gpt-4o")
    )
    sim.push(Reply(status=503))
    assert alternative.with_config(configurable={"which": "b"}).invoke("hi").content


def test_a_per_call_model_is_charged_to_that_models_guard(
    pool: ClientPool, sim: SimulatorThread
) -> None:
    llm = pool.chat_model(model="gpt-4o-mini")
    llm.invoke("hi", model="gpt-4o")
    assert pool.metrics.series(sim.base_url, "gpt-4o")["calls"] == 1
    assert pool.metrics.series(sim.base_url, "gpt-4o-mini")["calls"] == 0
    assert llm.guard_for("gpt-4o") is not llm.guard


@pytest.mark.filterwarnings("ignore::langchain_core._api.beta_decorator.LangChainBetaWarning")
@pytest.mark.filterwarnings("ignore:The default value of `allowed_objects`")
def test_serialisation_round_trips_like_chat_openai(pool: ClientPool) -> None:
    from langchain_core.load import dumpd, dumps, loads

    llm = pool.chat_model(model="gpt-4o", temperature=0.2, max_retries=2, timeout=30)
    text = dumps(llm)
    assert API_KEY not in text  # the key is a secret reference, never its value
    assert dumpd(llm)["id"] == dumpd(ChatOpenAI(model="gpt-4o", api_key="x"))["id"]
    back = loads(text, secrets_map={"OPENAI_API_KEY": API_KEY}, allowed_objects=[ChatOpenAI])
    assert isinstance(back, ChatOpenAI)
    for field in ("model_name", "temperature", "max_retries", "request_timeout", "openai_api_base"):
        assert getattr(back, field) == getattr(llm, field), field
    assert back.openai_api_key is not None
    assert back.openai_api_key.get_secret_value() == API_KEY


def test_a_copy_with_other_guards_uses_them(pool: ClientPool, sim: SimulatorThread) -> None:
    from rat_langchain.guards import build_guards

    llm = pool.chat_model()
    assert llm.guard is not None  # made and remembered for the pool's guards
    other = build_guards(RatConfig.from_dict({}, env={}))
    moved = llm.with_guards(other)
    assert moved.guard is not None
    assert moved.guard.metrics is other.metrics
    assert llm.guard.metrics is pool.metrics
