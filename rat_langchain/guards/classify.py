"""What a failure means: transient or the caller's, retry or not, how the breaker counts it.

One home for the judgement both the retry policy and the breaker make about an exception, so the
two cannot disagree. A 429 is the limiter's business (retried after the server's wait) except
``insufficient_quota``, which no wait fixes: it forces the breaker open and is not retried.
"""

from __future__ import annotations

import enum
import json

import openai

from rat_langchain.config import NO_KEY
from rat_langchain.errors import (
    ApiKeyError,
    ApiPermissionError,
    BackpressureError,
    CircuitOpenError,
    EndpointConnectionError,
    EndpointTimeoutError,
    MalformedResponseError,
    RateLimiterUnavailable,
    RequestTooLarge,
    shorten,
)
from rat_langchain.guards.key import tenant_of

__all__ = [
    "TRANSIENT_ERRORS",
    "Outcome",
    "classify",
    "explain",
    "is_retryable",
    "quota_exhausted",
]

_RETRY_STATUS = {408, 409, 429}
_NO_KEY_TENANT = tenant_of(NO_KEY)


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


def explain(exc: BaseException, endpoint: str = "", *, tenant: str = "") -> BaseException:
    """The error a caller sees for a failed call: what to change, in the SDK's own types.

    - a 401/403 becomes :class:`ApiKeyError` / :class:`ApiPermissionError`, about the key (never
      the key), still the SDK's ``AuthenticationError`` / ``PermissionDeniedError`` with the
      original response and body;
    - a failed connection or an HTTP timeout becomes :class:`EndpointConnectionError` /
      :class:`EndpointTimeoutError`, one type for chat and embeddings alike, naming the URL
      and the cause (the SDK says only "Connection error.");
    - a 404 from a base URL with no ``/v1`` says which URL was probably meant.

    ``tenant`` is the call's API-key fingerprint: the placeholder's (no key set) is named.
    """
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        if isinstance(exc, ApiKeyError):
            return exc
        where = f" by {endpoint}" if endpoint else ""
        denied = exc.status_code == 403
        what = "refused for this resource" if denied else "rejected"
        kind = ApiPermissionError if denied else ApiKeyError
        none_set = (
            "no API key was set (a keyless local server needs none, this one does): set "
            if tenant == _NO_KEY_TENANT
            else "check "
        )
        return kind(
            f"the API key was {what}{where} (HTTP {exc.status_code}); {none_set}"
            "OPENAI_API_KEY or endpoint.api_key in config.yaml, and the key's project and "
            "permissions",
            response=exc.response,
            body=exc.body,
        )
    if isinstance(exc, openai.NotFoundError):
        return _missing_v1(exc)
    if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, EndpointConnectionError):
        url = exc.request.url  # no query, no user info: nothing secret in the message
        port = f":{url.port}" if url.port else ""
        where = f"{url.scheme}://{url.host}{port}{url.path}"
        cause = exc.__cause__ or exc.__context__
        while cause is not None and isinstance(cause, openai.APIConnectionError):
            cause = cause.__cause__ or cause.__context__
        why = f" ({type(cause).__name__}: {shorten(str(cause), 200)})" if cause else ""
        if isinstance(exc, openai.APITimeoutError):
            return EndpointTimeoutError(
                f"no answer from {where} within the HTTP timeout "
                f"(connection_pooling.request_timeout_s){why}",
                request=exc.request,
            )
        return EndpointConnectionError(f"could not connect to {where}{why}", request=exc.request)
    return exc


def _missing_v1(exc: openai.NotFoundError) -> BaseException:
    """A 404 for a request whose URL has no ``/v1`` segment: the usual cause is a base URL
    given as the server's root (``http://localhost:11434``) where the OpenAI-compatible API
    lives under ``/v1``. The message says so; the type and response stay the SDK's."""
    url = exc.response.request.url
    segments = url.path.split("/")
    if "v1" in segments or "openai" in segments:  # Azure's /openai/deployments/... paths
        return exc
    operation = next((tail for tail in _OPERATIONS if url.path.endswith(tail)), "/" + segments[-1])
    root = f"{url.scheme}://{url.host}{f':{url.port}' if url.port else ''}"
    base = url.path[: len(url.path) - len(operation)].rstrip("/")
    hint = (
        f"HTTP 404 from {root}{url.path}: the base URL has no /v1; "
        f"did you mean base_url='{root}{base}/v1'?"
    )
    if not str(exc).startswith("HTTP 404 from"):
        exc.message = hint
        exc.args = (hint,)
    return exc


# The API paths this library calls, to find the base URL a 404's request was sent under.
_OPERATIONS = ("/chat/completions", "/embeddings", "/batches", "/files", "/models")
