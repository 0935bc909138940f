from langchain_tests.unit_tests import EmbeddingsUnitTests

from rat_langchain import PooledOpenAIEmbeddings


class TestStandardEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[PooledOpenAIEmbeddings]:
        return PooledOpenAIEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, object]:
        return {"model": "text-embedding-3-small", "api_key": "sk-unit", "batch_size": 50}
