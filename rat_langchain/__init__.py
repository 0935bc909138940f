"""rat_langchain: pooled, rate-limited, resilient OpenAI calls for LangChain.

The public API, in one place. Names load on first use (as ``langchain_core`` does), so
``import rat_langchain`` costs milliseconds: langchain_openai, FAISS, the tokenizer and the
simulator are imported only by what needs them. Where each part lives (``docs/design.md``):

- ``pool``, the request path: ``ClientPool``, the chat model, the embeddings, ``resilient()``,
  ``LLMBatcher``; beside it ``config``, ``errors`` (the whole exception tree) and ``cli``;
- ``guards``: limiter, breaker, retries, the per-call engine, ``guards.redis``;
- ``index``: FAISS store, indexer, memory, embedding cache;
- ``plans``: plan, executor, planner, catalog, orchestrator, verification;
- ``metrics``: the collector and its exporters (``metrics.otel``);
- ``sim``: the OpenAI-compatible simulator, which stands alone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rat_langchain.config import RatConfig
    from rat_langchain.errors import (
        ApiKeyError,
        ApiPermissionError,
        BackpressureError,
        BatchJobError,
        CircuitOpenError,
        ConfigError,
        DeadlineExceeded,
        EmbeddingInputError,
        EmbeddingResponseError,
        IndexLoadError,
        PlanError,
        PlanningError,
        PoolClosedError,
        RateLimiterUnavailable,
        RatError,
        RequestTooLarge,
    )
    from rat_langchain.guards.breaker import BreakerRegistry, CircuitBreaker
    from rat_langchain.guards.limiter import RateLimit, RateLimiter
    from rat_langchain.guards.redis.breaker import SharedBreakerState
    from rat_langchain.guards.redis.limiter import RedisRateLimiter
    from rat_langchain.guards.retry import RetryPolicy
    from rat_langchain.index.batch_api import BatchReport, BatchSettings
    from rat_langchain.index.embedding_cache import EmbeddingCache
    from rat_langchain.index.faiss_store import FaissStore
    from rat_langchain.index.indexer import BatchIndexer, IndexReport, load_folder
    from rat_langchain.index.memory import MemoryStore
    from rat_langchain.metrics.collector import Metrics, MetricsCallbackHandler
    from rat_langchain.plans.catalog import ToolCatalog
    from rat_langchain.plans.executor import ParallelPlanExecutor, PlanCallbacks
    from rat_langchain.plans.joiner import Decision, Joiner, JoinInput
    from rat_langchain.plans.orchestrator import Orchestrator
    from rat_langchain.plans.plan import Plan, Step
    from rat_langchain.plans.planner import Planner
    from rat_langchain.plans.results import PlanResult, StepResult, StepStatus
    from rat_langchain.plans.verification import BackgroundVerifier, Verdict
    from rat_langchain.pool.batcher import LLMBatcher
    from rat_langchain.pool.chat import ResilientChatOpenAI
    from rat_langchain.pool.embeddings import PooledOpenAIEmbeddings
    from rat_langchain.pool.pool import ClientPool
    from rat_langchain.pool.runnables import ResilientRunnable, resilient
    from rat_langchain.sim import Simulator, SimulatorProcess, SimulatorThread

__all__ = [
    "ApiKeyError",
    "ApiPermissionError",
    "BackgroundVerifier",
    "BackpressureError",
    "BatchIndexer",
    "BatchJobError",
    "BatchReport",
    "BatchSettings",
    "BreakerRegistry",
    "CircuitBreaker",
    "CircuitOpenError",
    "ClientPool",
    "ConfigError",
    "DeadlineExceeded",
    "Decision",
    "EmbeddingCache",
    "EmbeddingInputError",
    "EmbeddingResponseError",
    "FaissStore",
    "IndexLoadError",
    "IndexReport",
    "JoinInput",
    "Joiner",
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

# Where each public name lives; the first access imports that module.
_LAZY: dict[str, str] = {
    "ApiKeyError": "rat_langchain.errors",
    "ApiPermissionError": "rat_langchain.errors",
    "BackgroundVerifier": "rat_langchain.plans.verification",
    "BatchIndexer": "rat_langchain.index.indexer",
    "BatchJobError": "rat_langchain.errors",
    "BatchReport": "rat_langchain.index.batch_api",
    "BatchSettings": "rat_langchain.index.batch_api",
    "BreakerRegistry": "rat_langchain.guards.breaker",
    "CircuitBreaker": "rat_langchain.guards.breaker",
    "CircuitOpenError": "rat_langchain.errors",
    "ClientPool": "rat_langchain.pool.pool",
    "ConfigError": "rat_langchain.errors",
    "DeadlineExceeded": "rat_langchain.errors",
    "Decision": "rat_langchain.plans.joiner",
    "EmbeddingCache": "rat_langchain.index.embedding_cache",
    "EmbeddingInputError": "rat_langchain.errors",
    "EmbeddingResponseError": "rat_langchain.errors",
    "FaissStore": "rat_langchain.index.faiss_store",
    "IndexLoadError": "rat_langchain.errors",
    "IndexReport": "rat_langchain.index.indexer",
    "JoinInput": "rat_langchain.plans.joiner",
    "Joiner": "rat_langchain.plans.joiner",
    "LLMBatcher": "rat_langchain.pool.batcher",
    "MemoryStore": "rat_langchain.index.memory",
    "Metrics": "rat_langchain.metrics.collector",
    "MetricsCallbackHandler": "rat_langchain.metrics.collector",
    "Orchestrator": "rat_langchain.plans.orchestrator",
    "ParallelPlanExecutor": "rat_langchain.plans.executor",
    "Plan": "rat_langchain.plans.plan",
    "PlanCallbacks": "rat_langchain.plans.executor",
    "PlanError": "rat_langchain.errors",
    "PlanResult": "rat_langchain.plans.results",
    "Planner": "rat_langchain.plans.planner",
    "PlanningError": "rat_langchain.errors",
    "PoolClosedError": "rat_langchain.errors",
    "PooledOpenAIEmbeddings": "rat_langchain.pool.embeddings",
    "RatConfig": "rat_langchain.config",
    "RatError": "rat_langchain.errors",
    "RateLimit": "rat_langchain.guards.limiter",
    "BackpressureError": "rat_langchain.errors",
    "RateLimiter": "rat_langchain.guards.limiter",
    "RateLimiterUnavailable": "rat_langchain.errors",
    "RedisRateLimiter": "rat_langchain.guards.redis.limiter",
    "RequestTooLarge": "rat_langchain.errors",
    "ResilientChatOpenAI": "rat_langchain.pool.chat",
    "ResilientRunnable": "rat_langchain.pool.runnables",
    "RetryPolicy": "rat_langchain.guards.retry",
    "SharedBreakerState": "rat_langchain.guards.redis.breaker",
    "Simulator": "rat_langchain.sim",
    "SimulatorProcess": "rat_langchain.sim",
    "SimulatorThread": "rat_langchain.sim",
    "Step": "rat_langchain.plans.plan",
    "StepResult": "rat_langchain.plans.results",
    "StepStatus": "rat_langchain.plans.results",
    "ToolCatalog": "rat_langchain.plans.catalog",
    "Verdict": "rat_langchain.plans.verification",
    "load_folder": "rat_langchain.index.indexer",
    "resilient": "rat_langchain.pool.runnables",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rat_langchain' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
