"""What a new user meets first, against the simulator: a base URL without /v1, a local server
with no key, a key read from a file with its newline, a server that is not there, a wrong
input type. Each message says what to change; each type is the one the SDK user expects."""

from __future__ import annotations

import socket

import openai
import pytest
from langchain_core.exceptions import ModelConnectionError

from rat_langchain import ClientPool, ConfigError, RatConfig
from rat_langchain.config import NO_KEY
from rat_langchain.errors import ApiKeyError, EndpointConnectionError, RatError
from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY, pool_config

_ONE_ATTEMPT = {"retries": {"max_attempts": 1}}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens here once the probe closes


def test_a_base_url_without_v1_says_which_url_was_meant(sim: SimulatorThread) -> None:
    root = sim.base_url.removesuffix("/v1")
    with ClientPool(pool_config(performance=_ONE_ATTEMPT)) as pool:
        with pytest.raises(openai.NotFoundError) as chat:
            pool.chat_model(base_url=root, api_key=API_KEY).invoke("hi")
        with pytest.raises(openai.NotFoundError) as embed:
            pool.embeddings(base_url=root + "/", api_key=API_KEY).embed_query("hi")
    for caught in (chat, embed):
        assert f"did you mean base_url='{root}/v1'?" in str(caught.value)


def test_a_404_under_v1_is_left_as_the_server_said(sim: SimulatorThread) -> None:
    """A model the server does not have is a 404 under /v1: no hint about the URL there."""
    sim.configure(models=["gpt-4o-mini"])
    with (
        ClientPool(pool_config(performance=_ONE_ATTEMPT)) as pool,
        pytest.raises(openai.NotFoundError) as caught,
    ):
        pool.chat_model(model="gpt-4o-mnii", base_url=sim.base_url, api_key=API_KEY).invoke("hi")
    assert "gpt-4o-mnii" in str(caught.value)
    assert "did you mean base_url" not in str(caught.value)


@pytest.mark.usefixtures("no_openai_env")
def test_a_local_server_needs_no_api_key(sim: SimulatorThread) -> None:
    """Ollama, vLLM, LM Studio and llama.cpp ask for no key; the SDK insists on one. Before,
    a pool with none set raised ConfigError even for http://localhost."""
    with ClientPool(pool_config()) as pool:
        assert pool.chat_model(base_url=sim.base_url).invoke("hi").content
        assert len(pool.embeddings(base_url=sim.base_url).embed_query("hi")) > 0


@pytest.mark.usefixtures("no_openai_env")
def test_openai_itself_still_needs_a_key_and_a_keyed_server_says_none_was_set(
    sim: SimulatorThread,
) -> None:
    with ClientPool(pool_config()) as pool:
        with pytest.raises(ConfigError, match=r"no API key for api\.openai\.com"):
            pool.chat_model()
        with pytest.raises(ConfigError, match=r"no API key for x\.openai\.azure\.com"):
            pool.chat_model(base_url="https://x.openai.azure.com/openai/v1")
    sim.configure(api_key="sk-the-server-wants-one")
    with (
        ClientPool(pool_config(performance=_ONE_ATTEMPT)) as pool,
        pytest.raises(ApiKeyError, match="no API key was set") as caught,
    ):
        pool.chat_model(base_url=sim.base_url).invoke("hi")
    assert NO_KEY not in str(caught.value)


@pytest.mark.parametrize("key", [API_KEY + "\n", API_KEY + " ", " " + API_KEY, "sk-a\x00b"])
def test_an_api_key_with_whitespace_is_named_never_shown(sim: SimulatorThread, key: str) -> None:
    """A key read from a file kept its newline: the HTTP client refused the header as
    "Potential header injection attack", a ValueError that named no setting."""
    with ClientPool(pool_config()) as pool:
        with pytest.raises(ConfigError, match="the API key contains whitespace") as caught:
            pool.chat_model(base_url=sim.base_url, api_key=key)
        with pytest.raises(ValueError, match=r"endpoint\.api_key"):
            pool.embeddings(base_url=sim.base_url, api_key=key).embed_query("hi")
    assert key.strip() not in str(caught.value)
    config = RatConfig.from_dict(
        {"endpoint": {"base_url": sim.base_url, "api_key": key}}, env={}
    ).with_endpoint()
    with ClientPool(config) as pool, pytest.raises(ConfigError, match="api_key"):
        pool.chat_model()


def test_chat_and_embeddings_raise_one_connection_error_type_naming_the_url() -> None:
    """The same refused port gave langchain-openai's OpenAIConnectionError from chat and the
    SDK's APIConnectionError from embeddings, and aiohttp's "ssl:default" on plain HTTP."""
    url = f"http://127.0.0.1:{_free_port()}/v1"
    config = RatConfig.from_dict(
        {"endpoint": {"base_url": url, "api_key": API_KEY}, "performance": _ONE_ATTEMPT},
        env={},
    )
    caught: list[BaseException] = []
    with ClientPool(config) as pool:
        for call in (
            lambda: pool.chat_model().invoke("hi"),
            lambda: pool.embeddings().embed_query("hi"),
        ):
            with pytest.raises(EndpointConnectionError) as info:
                call()
            caught.append(info.value)
    chat, embed = caught
    assert type(chat) is type(embed) is EndpointConnectionError
    for error in caught:
        assert isinstance(error, openai.APIConnectionError)
        assert isinstance(error, ModelConnectionError)  # LangChain's provider-neutral type
        assert isinstance(error, RatError)
        assert not isinstance(error, openai.APITimeoutError)
        assert "ssl:" not in str(error)
        assert API_KEY not in str(error)
    assert f"{url}/chat/completions" in str(chat)
    assert f"{url}/embeddings" in str(embed)


def test_a_wrong_input_type_is_named_in_plain_words(sim: SimulatorThread) -> None:
    with ClientPool(pool_config()) as pool:
        emb = pool.embeddings(base_url=sim.base_url, api_key=API_KEY)
        with pytest.raises(TypeError, match=r"^text 1 is an int, not a str$"):
            emb.embed_documents(["ok", 5])  # type: ignore[list-item]
        with pytest.raises(TypeError, match=r"^the query is an int, not a str$"):
            emb.embed_query(5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^the query is None, not a str$"):
            emb.embed_query(None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^the query is empty"):
            emb.embed_query("  ")
