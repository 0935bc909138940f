"""What a failure means: transient or the caller's, retry or not, how the breaker counts it.

One home for the judgement both the retry policy and the breaker make about an exception, so the
two cannot disagree. A 429 is the limiter's business (retried after the server's wait) except
``insufficient_quota``, which no wait fixes: it forces the breaker open and is not retried.
"""

from __future__ import annotations

import enum
import json

import openai

from rat_langchain.errors import (
    ApiKeyError,
    ApiPermissionError,
    BackpressureError,
    CircuitOpenError,
    MalformedResponseError,
    RateLimiterUnavailable,
    RequestTooLarge,
    shorten,
)

__all__ = [
    "TRANSIENT_ERRORS",
    "Outcome",
    "classify",
    "explain",
    "is_retryable",
    "quota_exhausted",
]

_RETRY_STATUS = {408, 409, 429}


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"  # the caller's error: neither success nor failure
    FORCE_OPEN = "force_open"  # e.g. insufficient_quota: no point in probing soon


# Failures of the transport or the server, shared with the retry policy.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    ConnectionError,
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.APIResponseValidationError,
    json.JSONDecodeError,  # a truncated body: the server misbehaved
    MalformedResponseError,  # a 200 whose body is not the documented answer
)


def quota_exhausted(exc: openai.APIStatusError) -> bool:
    """A 429 that says the account is out of credit, not that it is going too fast."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body, dict) else {}
    fields = {getattr(exc, "code", None), getattr(exc, "type", None)}
    if isinstance(error, dict):
        fields |= {error.get("code"), error.get("type")}
    return "insufficient_quota" in fields


def classify(exc: BaseException | None) -> Outcome:
    """How a call's exception counts. Unknown exceptions count as failures (Resilience4j's
    default), except ``ValueError``/``TypeError``/``KeyError``, which are the caller's input."""
    if exc is None:
        return Outcome.SUCCESS
    if isinstance(exc, CircuitOpenError | RateLimiterUnavailable | BackpressureError):
        return Outcome.IGNORED  # refused here, before the endpoint: never its fault
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return Outcome.FORCE_OPEN if quota_exhausted(exc) else Outcome.IGNORED
        if status >= 500 or status == 408:
            return Outcome.FAILURE
        return Outcome.IGNORED
    if getattr(exc, "squeezed", False):
        return Outcome.IGNORED  # an attempt this client left too little time (guards.engine)
    if isinstance(exc, TRANSIENT_ERRORS):
        return Outcome.FAILURE
    if isinstance(exc, ValueError | TypeError | KeyError):
        return Outcome.IGNORED
    return Outcome.FAILURE


def is_retryable(exc: BaseException) -> bool:
    """True for failures that a later attempt can fix."""
    if isinstance(exc, CircuitOpenError | RequestTooLarge | ApiKeyError):
        return False
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return not quota_exhausted(exc)
        return status in _RETRY_STATUS or status >= 500
    return isinstance(exc, TRANSIENT_ERRORS)


def explain(exc: BaseException, endpoint: str = "") -> BaseException:
    """Turn a 401/403 into :class:`ApiKeyError` / :class:`ApiPermissionError`, with a message
    about the key (never the key). Both stay the SDK's ``AuthenticationError`` /
    ``PermissionDeniedError``, with the original response and body."""
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        if isinstance(exc, ApiKeyError):
            return exc
        where = f" by {endpoint}" if endpoint else ""
        denied = exc.status_code == 403
        what = "refused for this resource" if denied else "rejected"
        kind = ApiPermissionError if denied else ApiKeyError
        return kind(
            f"the API key was {what}{where} (HTTP {exc.status_code}); check OPENAI_API_KEY or "
            "endpoint.api_key in config.yaml, and the key's project and permissions",
            response=exc.response,
            body=exc.body,
        )
    if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError):
        url = exc.request.url  # no query, no user info: nothing secret in the message
        port = f":{url.port}" if url.port else ""
        # the SDK says only "Connection error.": which endpoint, and why, is what a user needs.
        # The message is amended in place: the type (langchain-openai's subclass too) stays
        cause = exc.__cause__ or exc.__context__
        while cause is not None and isinstance(cause, openai.APIConnectionError):
            cause = cause.__cause__ or cause.__context__
        why = f" ({type(cause).__name__}: {shorten(str(cause), 200)})" if cause else ""
        message = f"could not connect to {url.scheme}://{url.host}{port}{url.path}{why}"
        if not str(exc).startswith("could not connect"):
            exc.message = message
            exc.args = (message,)
    return exc
