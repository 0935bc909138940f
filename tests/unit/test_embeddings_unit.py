from langchain_tests.unit_tests import EmbeddingsUnitTests

from rat_langchain import PooledOpenAIEmbeddings


class TestStandardEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[PooledOpenAIEmbeddings]:
        return PooledOpenAIEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, object]:
        return {"model": "text-embedding-3-small", "api_key": "sk-unit", "batch_size": 50}


def test_requests_are_sized_to_fill_the_concurrency_not_a_fixed_count() -> None:
    """batch_size None (the default): a large call goes in as many requests as run at once
    (a requests-per-minute limit binds late), a small one in requests of 100 texts."""
    from rat_langchain import RatConfig
    from rat_langchain.embeddings import _Split

    def sizes(count: int, **kwargs: object) -> list[int]:
        config = RatConfig.from_dict({}, env={})
        emb = PooledOpenAIEmbeddings(config=config, api_key="sk-x", **kwargs)  # type: ignore[arg-type]
        split = _Split(pieces=["t"] * count, tokens=[5] * count)
        return [len(b) for b in emb._batches(split)]

    assert sizes(500) == [100] * 5
    assert sizes(10_000) == [625] * 16  # 16 requests in flight by default
    assert sizes(100_000)[:48] == [2048] * 48  # the API's cap per request
    assert len(sizes(100_000)) == 49
    assert sizes(1000, batch_size=250) == [250] * 4  # a number fixes it
    assert sizes(1000, max_concurrent_batches=2) == [500, 500]
