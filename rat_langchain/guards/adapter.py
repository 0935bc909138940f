"""Any of our limiters as LangChain's ``BaseRateLimiter``, for ``ChatOpenAI(rate_limiter=...)``.

LangChain's interface carries no weight, so each call is charged one request and a fixed
estimate of tokens; the pool's own models charge real counts (guards.engine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_core.rate_limiters import BaseRateLimiter

from rat_langchain import _portal
from rat_langchain.guards.key import Key

if TYPE_CHECKING:
    from rat_langchain.guards.limiter import Limiter

__all__ = ["LangChainRateLimiter"]


class LangChainRateLimiter(BaseRateLimiter):
    """A :class:`~rat_langchain.guards.limiter.Limiter` as LangChain's ``BaseRateLimiter``."""

    def __init__(self, limiter: Limiter, key: Key, tokens_per_request: int = 0) -> None:
        self.limiter = limiter
        self.key = key
        self.tokens = tokens_per_request

    def acquire(self, *, blocking: bool = True) -> bool:
        """Sync callers wait on the sync entry points' loop, first in, first out with the
        async ones (as langchain-core's limiter shares one ``_consume`` between both)."""
        if not blocking:
            return self.limiter.try_acquire(self.key, self.tokens) is not None
        _portal.run(self.limiter.acquire(self.key, self.tokens))
        return True

    async def aacquire(self, *, blocking: bool = True) -> bool:
        if not blocking:
            return self.limiter.try_acquire(self.key, self.tokens) is not None
        await self.limiter.acquire(self.key, self.tokens)
        return True

    def __repr__(self) -> str:
        return f"LangChainRateLimiter(key={self.key!r}, tokens_per_request={self.tokens})"
