import rat_langchain
import rat_langchain.sim

EXPECTED = {
    "EmbeddingCache",
    "LLMBatcher",
    "Metrics",
    "MetricsCallbackHandler",
    "RateLimitExceeded",
    "RateLimiterUnavailable",
    "RedisRateLimiter",
    "SharedBreakerState",
    "ToolCatalog",
    "PlanCallbacks",
    "Orchestrator",
    "Planner",
    "PlanningError",
    "BackgroundVerifier",
    "Verdict",
    "ApiKeyError",
    "BatchIndexer",
    "IndexReport",
    "load_folder",
    "MemoryStore",
    "ParallelPlanExecutor",
    "Plan",
    "PlanError",
    "PlanResult",
    "Step",
    "StepResult",
    "StepStatus",
    "BreakerRegistry",
    "CircuitBreaker",
    "CircuitOpenError",
    "ClientPool",
    "ConfigError",
    "DeadlineExceeded",
    "EmbeddingInputError",
    "EmbeddingResponseError",
    "FaissStore",
    "IndexLoadError",
    "PoolClosedError",
    "PooledOpenAIEmbeddings",
    "RateLimit",
    "RateLimiter",
    "RatConfig",
    "RatError",
    "RequestTooLarge",
    "ResilientChatOpenAI",
    "ResilientRunnable",
    "RetryPolicy",
    "Simulator",
    "SimulatorProcess",
    "SimulatorThread",
    "resilient",
}


def test_public_api_is_deliberate() -> None:
    assert set(rat_langchain.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(rat_langchain, name) is not None


def test_sim_api() -> None:
    assert {"Simulator", "SimConfig", "SimStats", "Reply"} <= set(rat_langchain.sim.__all__)


def test_every_error_is_a_rat_error() -> None:
    for name in (
        "ApiKeyError",
        "CircuitOpenError",
        "ConfigError",
        "DeadlineExceeded",
        "EmbeddingInputError",
        "EmbeddingResponseError",
        "IndexLoadError",
        "PlanError",
        "PoolClosedError",
        "RequestTooLarge",
    ):
        assert issubclass(getattr(rat_langchain, name), rat_langchain.RatError)
