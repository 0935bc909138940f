"""Any ``str`` the API accepts is handled: texts over the tokenizer's safe size are split (or,
with ``long_text="reject"``, rejected naming their index), and a lone surrogate is a ValueError
naming its index, for embeddings and chat prompts alike."""

from __future__ import annotations

import pytest

from rat_langchain import ClientPool
from rat_langchain._tokens import count_tokens
from rat_langchain.sim import SimulatorThread
from tests.conftest import API_KEY, pool_config

HUGE = "word " * 300_000  # 1.5 MB: the tokenizer alone refuses it ("too long to encode safely")


def test_the_token_count_of_a_huge_text_is_the_sum_of_its_parts() -> None:
    assert count_tokens(HUGE) == pytest.approx(300_000, rel=0.001)
    assert count_tokens("é" * 1_200_000) > 0


def test_huge_texts_are_embedded_in_chunks_or_rejected_by_index(sim: SimulatorThread) -> None:
    pool = ClientPool(pool_config())
    try:
        emb = pool.embeddings(base_url=sim.base_url, api_key=API_KEY)
        vectors = emb.embed_documents(["short", HUGE])
        assert len(vectors) == 2
        assert len(vectors[1]) == 1536
        assert sim.stats().embedding_inputs > 30  # 300k tokens in 8191-token chunks
        strict = pool.embeddings(base_url=sim.base_url, api_key=API_KEY, long_text="reject")
        with pytest.raises(ValueError, match="text 1 has 3000"):
            strict.embed_documents(["short", HUGE])
    finally:
        pool.close()


def test_a_lone_surrogate_is_a_value_error_naming_its_index(sim: SimulatorThread) -> None:
    pool = ClientPool(pool_config())
    try:
        emb = pool.embeddings(base_url=sim.base_url, api_key=API_KEY)
        with pytest.raises(ValueError, match="text 2 has a lone surrogate at character 3"):
            emb.embed_documents(["fine", "also fine", "bad\ud800text"])
        llm = pool.chat_model(base_url=sim.base_url, api_key=API_KEY)
        with pytest.raises(ValueError, match="message 1 has a lone surrogate"):
            llm.invoke([("system", "be brief"), ("user", "hi \udfff")])
        assert sim.stats().count("chat") == 0  # refused before anything was sent
        assert llm.invoke([("user", HUGE[:200])]).content  # ordinary text still goes
    finally:
        pool.close()
