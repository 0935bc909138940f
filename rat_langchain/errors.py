"""One exception tree, so callers can catch everything rat_langchain raises with one ``except``.

Every message names the setting or the input to change; the cause is chained with ``from``.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DeadlineExceeded", "PoolClosedError", "RatError"]


class RatError(Exception):
    """Base class of every error rat_langchain raises on purpose."""


class ConfigError(RatError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range.

    ``errors`` holds one ``(key_path, message)`` pair per problem, e.g.
    ``("performance.rate_limiting.rpm_limit", "Input should be greater than 0")``.
    """

    def __init__(self, errors: list[tuple[str, str]], *, source: str = "configuration") -> None:
        self.errors = errors
        lines = "\n".join(f"  {path}: {message}" for path, message in errors)
        super().__init__(f"invalid {source}:\n{lines}")


class PoolClosedError(RatError, RuntimeError):
    """A :class:`~rat_langchain.ClientPool` was used after ``aclose()``; create a new one."""


class DeadlineExceeded(RatError, TimeoutError):
    """A call, retries included, did not finish by its deadline."""
