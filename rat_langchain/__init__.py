"""rat_langchain: pooled, rate-limited, resilient OpenAI calls for LangChain.

The public API, in one place. Everything else is private or lives in a documented submodule
(``rat_langchain.sim`` for the simulator, ``rat_langchain.otel`` for OpenTelemetry export).
"""

from __future__ import annotations

from rat_langchain.batcher import LLMBatcher
from rat_langchain.breaker import BreakerRegistry, CircuitBreaker, CircuitOpenError
from rat_langchain.catalog import ToolCatalog
from rat_langchain.chat import ResilientChatOpenAI
from rat_langchain.client import ClientPool
from rat_langchain.config import RatConfig
from rat_langchain.embedding_cache import EmbeddingCache
from rat_langchain.embeddings import (
    EmbeddingInputError,
    EmbeddingResponseError,
    PooledOpenAIEmbeddings,
)
from rat_langchain.errors import ConfigError, DeadlineExceeded, PoolClosedError, RatError
from rat_langchain.executor import (
    ParallelPlanExecutor,
    PlanCallbacks,
    PlanResult,
    StepResult,
    StepStatus,
)
from rat_langchain.faiss_store import FaissStore, IndexLoadError
from rat_langchain.indexer import BatchIndexer, IndexReport, load_folder
from rat_langchain.memory import MemoryStore
from rat_langchain.metrics import Metrics, MetricsCallbackHandler
from rat_langchain.orchestrator import Orchestrator
from rat_langchain.plan import Plan, PlanError, Step
from rat_langchain.planner import Planner, PlanningError
from rat_langchain.ratelimit import RateLimit, RateLimiter, RateLimitExceeded, RequestTooLarge
from rat_langchain.retry import ApiKeyError, RetryPolicy
from rat_langchain.runnables import ResilientRunnable, resilient
from rat_langchain.shared import RateLimiterUnavailable, RedisRateLimiter, SharedBreakerState
from rat_langchain.sim import Simulator, SimulatorProcess, SimulatorThread
from rat_langchain.verification import BackgroundVerifier, Verdict

__all__ = [
    "ApiKeyError",
    "BackgroundVerifier",
    "BatchIndexer",
    "BreakerRegistry",
    "CircuitBreaker",
    "CircuitOpenError",
    "ClientPool",
    "ConfigError",
    "DeadlineExceeded",
    "EmbeddingCache",
    "EmbeddingInputError",
    "EmbeddingResponseError",
    "FaissStore",
    "IndexLoadError",
    "IndexReport",
    "LLMBatcher",
    "MemoryStore",
    "Metrics",
    "MetricsCallbackHandler",
    "Orchestrator",
    "ParallelPlanExecutor",
    "Plan",
    "PlanCallbacks",
    "PlanError",
    "PlanResult",
    "Planner",
    "PlanningError",
    "PoolClosedError",
    "PooledOpenAIEmbeddings",
    "RatConfig",
    "RatError",
    "RateLimit",
    "RateLimitExceeded",
    "RateLimiter",
    "RateLimiterUnavailable",
    "RedisRateLimiter",
    "RequestTooLarge",
    "ResilientChatOpenAI",
    "ResilientRunnable",
    "RetryPolicy",
    "SharedBreakerState",
    "Simulator",
    "SimulatorProcess",
    "SimulatorThread",
    "Step",
    "StepResult",
    "StepStatus",
    "ToolCatalog",
    "Verdict",
    "load_folder",
    "resilient",
]
__version__ = "0.1.0"
