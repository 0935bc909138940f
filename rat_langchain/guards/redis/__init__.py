"""Sharing through Redis: one quota (``RedisRateLimiter``) and breaker openings
(``SharedBreakerState``) across processes. Needs the ``redis`` extra."""

from rat_langchain.errors import RateLimiterUnavailable
from rat_langchain.guards.redis.breaker import SharedBreakerState
from rat_langchain.guards.redis.limiter import RedisRateLimiter

__all__ = ["RateLimiterUnavailable", "RedisRateLimiter", "SharedBreakerState"]
