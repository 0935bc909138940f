"""Every exception rat_langchain raises on purpose, in one tree, so one ``except`` catches them.

::

    RatError
    ├── ConfigError             (ValueError)     a setting is unknown, mistyped or out of range
    ├── PoolClosedError         (RuntimeError)   a ClientPool used after aclose()
    ├── DeadlineExceeded        (TimeoutError)   a call, retries included, ran out of time
    ├── ApiKeyError             (openai.AuthenticationError)  the key was rejected (401)
    │   └── ApiPermissionError  (openai.PermissionDeniedError) ... or refused (403)
    ├── EndpointConnectionError (openai.APIConnectionError, ModelConnectionError)
    │   │                                        the endpoint could not be reached
    │   └── EndpointTimeoutError (openai.APITimeoutError, ModelTimeoutError) ... in time
    ├── CircuitOpenError                         the endpoint's breaker is open: failing fast
    ├── RequestTooLarge         (ValueError)     a request can never fit the TPM limit
    ├── BackpressureError                        backpressure: the wait queue is full
    ├── RateLimiterUnavailable                   Redis holds the quota, is down, fail_closed
    ├── EmbeddingResponseError                   the server's vectors are not usable
    │   └── MalformedResponseError               a 200 whose body cannot be read (retried)
    ├── EmbeddingInputError     (ValueError)     inputs the server rejected, by index
    ├── IndexLoadError                           a saved index is missing or damaged
    └── PlanError                                a plan that cannot run
        └── PlanningError                        the LLM gave no valid plan

Why the mixins: a caller who catches the builtin (``TimeoutError``, ``ValueError``) or, where we
stand in for an SDK call, the SDK's own error (``openai.AuthenticationError``), keeps catching it
after the one-line swap; LangChain's provider-neutral ``ModelConnectionError`` too. Chat and
embeddings raise the same type for the same fault (the SDK alone gives ``APIConnectionError``
for one and langchain-openai's ``OpenAIConnectionError`` for the other). Every message names
the setting or the input to change; causes are chained with ``from``. Messages never contain
a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import openai
from langchain_core.exceptions import ModelConnectionError, ModelTimeoutError

__all__ = [
    "ApiKeyError",
    "ApiPermissionError",
    "BackpressureError",
    "CircuitOpenError",
    "ConfigError",
    "DeadlineExceeded",
    "EmbeddingInputError",
    "EmbeddingResponseError",
    "EndpointConnectionError",
    "EndpointTimeoutError",
    "IndexLoadError",
    "MalformedResponseError",
    "PlanError",
    "PlanningError",
    "PoolClosedError",
    "RatError",
    "RateLimiterUnavailable",
    "RequestTooLarge",
]

# Longest rendering of a user's value in a message: a value may be huge (or hostile).
_MAX_SHOWN = 200


def shorten(value: object, limit: int = _MAX_SHOWN) -> str:
    """``repr(value)``, cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text)} chars)"


def a_kind(value: object) -> str:
    """A value's type as a sentence says it: ``an int``, ``a list``, ``None``."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


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


class ApiKeyError(RatError, openai.AuthenticationError):
    """The endpoint rejected the API key (401). Retrying cannot help.

    Also an ``openai.AuthenticationError`` (with its ``response``, ``status_code`` and ``body``),
    so code written against the SDK catches it unchanged. The message is about the key, never
    the key itself.
    """

    def __init__(self, message: str, *, response: Any, body: object | None = None) -> None:
        openai.AuthenticationError.__init__(self, message, response=response, body=body)


class ApiPermissionError(ApiKeyError, openai.PermissionDeniedError):  # type: ignore[misc]
    """The key is valid but refused for this resource (403): also an
    ``openai.PermissionDeniedError``. (The SDK types ``status_code`` as ``Literal[401]`` on one
    base and ``Literal[403]`` on the other; this one is 403.)"""


class EndpointConnectionError(RatError, openai.APIConnectionError, ModelConnectionError):
    """The endpoint could not be reached (refused, unknown host, reset before an answer), after
    the retries. The message names the URL (no query, no credentials) and the cause; ``request``
    is the SDK's request, as on ``openai.APIConnectionError``."""

    def __init__(self, message: str, *, request: Any) -> None:
        openai.APIConnectionError.__init__(self, message=message, request=request)


class EndpointTimeoutError(EndpointConnectionError, openai.APITimeoutError, ModelTimeoutError):
    """The endpoint did not answer within the HTTP timeout (``request_timeout_s``), after the
    retries. A call's own deadline running out is :class:`DeadlineExceeded` instead."""


class CircuitOpenError(RatError):
    """The circuit is open: the call was refused without reaching the server.

    ``state`` is the breaker's state (a ``State``, which is a ``str``); ``retry_at`` is the breaker
    clock's time of the next allowed attempt (None while forced open); ``retry_in`` the seconds
    until then.
    """

    def __init__(self, name: str, state: str, retry_at: float | None, retry_in: float | None):
        self.name = name
        self.state = state
        self.retry_at = retry_at
        self.retry_in = retry_in
        when = (
            "until an operator closes it"
            if retry_in is None
            else f"next attempt in {retry_in:.2f}s"
        )
        super().__init__(f"circuit {name!r} is {state}: failing fast, {when}")


class RequestTooLarge(RatError, ValueError):
    """A request needs more tokens than the bucket can ever hold; waiting would never end."""


class BackpressureError(RatError):
    """Backpressure from this process's limiter, not a 429 from the server: the wait queue of a
    key is full (``max_queue``) or the wait would be longer than ``max_queue_wait_s``, so the
    caller is told at once instead of queueing."""

    def __init__(self, key: object, queued: int, expected_wait_s: float, reason: str) -> None:
        super().__init__(
            f"the rate limiter's queue for {key} {reason}: {queued} callers waiting, "
            f"expected wait {expected_wait_s:.2f} s (backpressure in this process, not a 429)"
        )
        self.key = key
        self.queued = queued
        self.expected_wait_s = expected_wait_s


class RateLimiterUnavailable(RatError):
    """Redis, which holds the shared quota, cannot be reached and ``redis_failure`` is
    ``fail_closed``: no request is sent rather than risk going over the shared budget."""


class EmbeddingResponseError(RatError):
    """The server's answer was not one finite vector of the expected size per input."""


class MalformedResponseError(EmbeddingResponseError):
    """A 200 answer whose body cannot be read as the endpoint's documented answer (not JSON, a
    field missing or of the wrong type). Transient: retried, and counted as the endpoint's
    failure by the breaker and the metrics; raised once the retries run out."""


class EmbeddingInputError(RatError, ValueError):
    """Some inputs were rejected by the server. ``failed`` maps input index to the reason;
    ``vectors`` holds the embeddings of every other input (None where it failed)."""

    def __init__(self, failed: dict[int, str], vectors: list[list[float] | None]) -> None:
        self.failed = failed
        self.vectors = vectors
        shown = ", ".join(f"{i}: {reason}" for i, reason in list(failed.items())[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        super().__init__(f"{len(failed)} input(s) rejected by the server: {shown}{more}")


class IndexLoadError(RatError):
    """A saved index is missing, truncated or inconsistent; nothing was loaded."""


class BatchJobError(RatError):
    """A Batch API run cannot go on: its journal names documents the corpus no longer holds,
    or the server's output breaks a bound (a line too long to read)."""


class PlanError(RatError):
    """A plan that cannot run: the message names the step, the reference or the cycle.

    Not a ValueError on purpose: pydantic would wrap a ValueError raised while validating a
    ``Plan`` into a ValidationError, and callers should be able to catch this one by name."""


class PlanningError(PlanError):
    """The LLM gave no valid plan within the allowed repair rounds; ``errors`` has each
    attempt's problem, in order."""

    def __init__(self, message: str, errors: Sequence[str]) -> None:
        super().__init__(message)
        self.errors = list(errors)
