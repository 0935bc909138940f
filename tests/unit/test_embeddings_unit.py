from langchain_tests.unit_tests import EmbeddingsUnitTests

from rat_langchain import PooledOpenAIEmbeddings


class TestStandardEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[PooledOpenAIEmbeddings]:
        return PooledOpenAIEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, object]:
        return {"model": "text-embedding-3-small", "api_key": "sk-unit", "batch_size": 50}


def test_requests_are_sized_so_the_request_limit_binds_no_earlier_than_the_token_limit() -> None:
    """batch_size None (the default): texts per request from the limits the limiter holds."""
    from rat_langchain import RatConfig
    from rat_langchain.pool.embeddings import _Split

    def sizes(count: int, limits: tuple[float | None, float | None], **kwargs: object) -> list[int]:
        config = RatConfig.from_dict({}, env={})
        emb = PooledOpenAIEmbeddings(config=config, api_key="sk-x", **kwargs)  # type: ignore[arg-type]
        split = _Split(pieces=["t"] * count, tokens=[10] * count)
        return [len(b) for b in emb._batches(split, emb._size(split, limits))]

    assert sizes(1000, (None, None)) == [100] * 10  # nothing known: 100 a request
    # 3000 RPM, 5M TPM, 10 tokens a text: 167 texts a request would just balance; 1.5 x that
    assert sizes(1000, (3000, 5_000_000)) == [250] * 4
    assert sizes(5000, (60, 5_000_000))[0] == 2048  # the API's cap
    assert sizes(1000, (10_000, 200_000)) == [100] * 10  # the token limit binds first anyway
    assert sizes(1000, (3000, 5_000_000), batch_size=300) == [300] * 3 + [100]  # a number
