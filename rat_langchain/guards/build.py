"""``build_guards(config)``: the one place where a config becomes limiter, breakers, retries,
deadline and metrics.

Why one place: the pool, ``resilient()``, the embeddings, ``LLMBatcher`` and the plan executor
all guard calls. When each wired its own, they drifted (a ``resilient()`` that ignored the Redis
backend and fed no metrics). Now each asks for :class:`Guards` and takes a :class:`Guard` per key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rat_langchain.config import RatConfig
from rat_langchain.guards.breaker import BreakerRegistry
from rat_langchain.guards.engine import Guard
from rat_langchain.guards.feedback import Feedback
from rat_langchain.guards.key import Key, KeyLike
from rat_langchain.guards.limiter import Limiter, RateLimiter
from rat_langchain.guards.remember import LimitMemory, default_path
from rat_langchain.guards.retry import RetryPolicy
from rat_langchain.metrics.collector import Metrics

__all__ = ["Guards", "build_guards"]

_FROM_CONFIG: Any = object()


@dataclass
class Guards:
    """The guards of one config: one limiter (this process's, or Redis's shared by processes),
    one breaker per key, one retry policy, one deadline, one metrics table. Every call guarded
    with them shares them: one quota and one breaker per (endpoint, model)."""

    config: RatConfig
    limiter: Limiter | None
    breakers: BreakerRegistry | None
    retry: RetryPolicy
    timeout: float | None
    metrics: Metrics = field(default_factory=Metrics)

    def guard(self, key: KeyLike) -> Guard:
        """The per-call policy of ``key``: deadline → retries → breaker → limiter."""
        key = Key.of(key)
        return Guard(
            key=key,
            limiter=self.limiter,
            breaker=self.breakers.get(key) if self.breakers is not None else None,
            retry=self.retry,
            timeout=self.timeout,
            metrics=self.metrics,
        )

    async def aclose(self) -> None:
        """Save what the limiter learned for the next run (``rate_limiting.remember``), and
        close what talks to Redis (the shared limiter and breaker state), if anything."""
        feedback = getattr(self.limiter, "feedback", None)
        if isinstance(feedback, Feedback) and feedback.memory is not None:
            learned = feedback.learned()
            if learned:
                feedback.memory.save(learned)
        for shared in (self.limiter, self.breakers.shared if self.breakers else None):
            closer = getattr(shared, "aclose", None)
            if closer is not None:
                await closer()


def build_guards(
    config: RatConfig | None = None,
    *,
    metrics: Metrics | None = None,
    limiter: Limiter | None = _FROM_CONFIG,
    breakers: BreakerRegistry | None = _FROM_CONFIG,
) -> Guards:
    """The guards ``config`` asks for (``RatConfig.load()`` by default: file-less defaults plus
    ``RAT_*`` environment overrides). Each part is built only if its ``enabled`` flag is on;
    ``limiter=`` / ``breakers=`` replace a part (``None`` switches it off)."""
    cfg = config if config is not None else RatConfig.load()
    perf = cfg.performance
    metrics = metrics if metrics is not None else Metrics(max_series=perf.keys.max_keys)
    if limiter is _FROM_CONFIG:
        limiter = _limiter(cfg) if perf.rate_limiting.enabled else None
    if breakers is _FROM_CONFIG:
        breakers = (
            BreakerRegistry(
                perf.circuit_breaker,
                shared=_shared_breakers(perf.rate_limiting.redis_url)
                if perf.circuit_breaker.share_open_state
                else None,
                listeners=[metrics.record_breaker],
                max_keys=perf.keys.max_keys,
                idle_s=perf.keys.idle_s,
            )
            if perf.circuit_breaker.enabled
            else None
        )
    if limiter is not None:
        metrics.watch_limits(limiter.limits)
    return Guards(
        config=cfg,
        limiter=limiter,
        breakers=breakers,
        retry=RetryPolicy.from_config(perf.retries),
        timeout=perf.retries.timeout_s,
        metrics=metrics,
    )


def _limiter(config: RatConfig) -> Limiter:
    perf = config.performance
    settings = perf.rate_limiting
    common: dict[str, Any] = {
        "max_concurrency": perf.parallel_execution.max_parallel_llm_calls,
        "max_pause_s": perf.retries.max_server_wait_s,  # no server header holds a key longer
        "max_keys": perf.keys.max_keys,
        "idle_s": perf.keys.idle_s,
    }
    if settings.backend == "redis":
        from rat_langchain.guards.redis.limiter import RedisRateLimiter  # needs the redis extra

        return RedisRateLimiter.from_config(settings, **common)
    memory = None
    if settings.remember:
        path = settings.remember_path or default_path()
        memory = LimitMemory(path, max_age_s=settings.remember_for_s, max_keys=perf.keys.max_keys)
    return RateLimiter.from_config(settings, memory=memory, **common)


def _shared_breakers(url: str) -> Any:
    from rat_langchain.guards.redis.breaker import SharedBreakerState

    return SharedBreakerState(url)
