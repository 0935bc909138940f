"""One builder of the openai SDK's status errors, as the SDK raises them for a response."""

from __future__ import annotations

import httpx2
import openai

__all__ = ["status_error"]

_CLASSES: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
    500: openai.InternalServerError,
}


def status_error(
    status: int, headers: dict[str, str] | None = None, body: object = None
) -> openai.APIStatusError:
    """The error the SDK raises for an answer of ``status`` with these headers and JSON body."""
    request = httpx2.Request("POST", "http://sim/v1/chat/completions")
    response = httpx2.Response(status, request=request, headers=headers or {}, json=body or {})
    kind = _CLASSES.get(
        status, openai.InternalServerError if status >= 500 else openai.APIStatusError
    )
    return kind(f"status {status}", response=response, body=body)
