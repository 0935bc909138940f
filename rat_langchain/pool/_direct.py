"""Chat completions sent without the SDK's per-request walk of its parameter types.

Why: openai's ``chat.completions.create`` runs every request's parameters through
``maybe_transform``, a walk of the forty-odd ``TypedDict`` annotations of its parameters that
drops omitted values and converts rich ones (pydantic models, iterators, files). What
``ChatOpenAI`` sends is plain JSON already (strings, numbers, lists, dicts), which the walk
leaves as it is, yet it cost 0.65 ms a request: a short chat call took 5.7 ms of client time
with it and 3.5 ms without (a 0 ms simulator, ``prompt | llm | parser``). At 50 calls in flight
a client is bound by that time, so the pool was no faster than plain ``ChatOpenAI`` there.

So a pooled model's ``client`` / ``async_client`` is this wrapper around the SDK's resource:
a request whose parameters are all plain JSON and all parameters of the installed SDK's
``create`` goes to the SDK's own ``post`` with the options that ``create`` would have built;
anything else (a pydantic ``response_format``, an unknown keyword the SDK would refuse, an
iterator) goes through ``create`` unchanged. The options, the response class and the stream
class are learned once from the installed SDK, by calling its ``create`` with ``_post``
captured (``_Template``), so a new SDK that adds an option (as 3.x added ``security``) is
followed, and one whose ``create`` no longer has this shape turns the wrapper off. Everything
else (``parse``, ``with_streaming_response``, ...) is the SDK's resource.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AsyncDirectCompletions", "DirectCompletions", "direct"]

# ``create``'s keywords that are request options, not body fields (the SDK's own names)
_OPTIONS = {
    "extra_headers": "headers",
    "extra_query": "params",
    "extra_body": "extra_json",
    "timeout": "timeout",
}
_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"  # what ``with_raw_response`` sets


@dataclass(frozen=True)
class _Template:
    """What the installed SDK's ``create`` passes to ``post``, for a plain request."""

    path: str
    options: Mapping[str, Any]  # without per-request values (e.g. ``security``)
    cast_to: Any
    stream_cls: Any
    fields: frozenset[str]  # body fields ``create`` accepts


class _Captured(Exception):
    def __init__(self, path: str, kwargs: dict[str, Any]) -> None:
        self.path, self.kwargs = path, kwargs


def _capture(path: str, **kwargs: Any) -> Any:
    raise _Captured(path, kwargs)


@functools.cache
def _template(resource_type: Any) -> tuple[_Template, bool] | None:
    """Learn ``create``'s request from the SDK itself, and whether it is async (None: its
    shape is not the one known here, and requests go through ``create``)."""
    try:
        fields = frozenset(
            name
            for name, parameter in inspect.signature(resource_type.create).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in _OPTIONS
        )
        probe = object.__new__(resource_type)
        probe._post = _capture
        is_async = False  # a sync create raises at once
        try:
            result = resource_type.create(probe, model="m", messages=[])
            is_async = inspect.iscoroutine(result)
            if is_async:
                try:
                    result.send(None)  # the SDK's transform awaits nothing: runs to ``_post``
                finally:
                    result.close()
        except _Captured as got:
            captured = got
        else:
            return None
    except Exception:
        return None
    kwargs = captured.kwargs
    body, options = kwargs.get("body"), kwargs.get("options")
    if (
        body != {"model": "m", "messages": []}
        or not isinstance(options, Mapping)
        or set(options) & set(_OPTIONS.values())
        or kwargs.get("stream") is not False
        or not {"messages", "model", "stream"} <= fields
        or set(kwargs) - {"body", "options", "cast_to", "stream", "stream_cls", "files"}
    ):
        return None
    template = _Template(
        captured.path, dict(options), kwargs.get("cast_to"), kwargs.get("stream_cls"), fields
    )
    return template, is_async


def _plain(value: Any) -> bool:
    """Whether ``value`` is JSON as ``json.dumps`` writes it unchanged: str, int, float, bool,
    None, lists/tuples and str-keyed dicts of those (iteratively: a deep text is no
    recursion limit)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in (str, int, float, bool) or item is None:
            continue
        if kind is list or kind is tuple:
            stack.extend(item)
        elif kind is dict:
            for key, inner in item.items():
                if type(key) is not str:
                    return False
                stack.append(inner)
        else:
            return False
    return True


class _Direct:
    """What the sync and async wrappers share: the split of ``create``'s keywords."""

    __slots__ = ("_resource", "_template")

    def __init__(self, resource: Any, template: _Template) -> None:
        self._resource = resource
        self._template = template

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resource, name)

    def create(self, **params: Any) -> Any:
        """The SDK's answer (for the async wrapper, an awaitable of it)."""
        return self._create(params, raw=False)

    @property
    def with_raw_response(self) -> _Raw:
        return _Raw(self)

    def _create(self, params: dict[str, Any], raw: bool) -> Any:
        raise NotImplementedError

    def _request(self, params: dict[str, Any], raw: bool) -> dict[str, Any] | None:
        """``post``'s keywords for ``params``, or None when the SDK's ``create`` must see them."""
        template = self._template
        body = {key: value for key, value in params.items() if key not in _OPTIONS}
        if (
            "messages" not in body
            or "model" not in body
            or not body.keys() <= template.fields
            or not _plain(body)
        ):
            return None
        options = dict(template.options)
        for keyword, option in _OPTIONS.items():
            value = params.get(keyword)
            if value is not None:
                options[option] = value
        if raw:
            options["headers"] = {**(options.get("headers") or {}), _RAW_RESPONSE_HEADER: "true"}
        return {
            "body": body,
            "options": options,
            "cast_to": template.cast_to,
            "stream": bool(body.get("stream")),
            "stream_cls": template.stream_cls,
        }


class DirectCompletions(_Direct):
    """The sync SDK ``chat.completions``, plain requests sent without the parameter walk."""

    __slots__ = ()

    def _create(self, params: dict[str, Any], raw: bool) -> Any:
        request = self._request(params, raw)
        if request is None:
            target = self._resource.with_raw_response if raw else self._resource
            return target.create(**params)
        return self._resource._post(self._template.path, **request)


class AsyncDirectCompletions(_Direct):
    """The async SDK ``chat.completions``, plain requests sent without the parameter walk."""

    __slots__ = ()

    async def _create(self, params: dict[str, Any], raw: bool) -> Any:
        request = self._request(params, raw)
        if request is None:
            target = self._resource.with_raw_response if raw else self._resource
            return await target.create(**params)
        return await self._resource._post(self._template.path, **request)


class _Raw:
    """``with_raw_response`` of a wrapper: ``create`` answers the SDK's raw response (for the
    async wrapper, an awaitable of it); everything else is the SDK's."""

    __slots__ = ("_direct",)

    def __init__(self, direct: _Direct) -> None:
        self._direct = direct

    def __getattr__(self, name: str) -> Any:
        return getattr(self._direct._resource.with_raw_response, name)

    def create(self, **params: Any) -> Any:
        return self._direct._create(params, raw=True)


def direct(resource: Any) -> Any:
    """``resource`` (an SDK ``chat.completions``) wrapped, or itself where the installed SDK's
    ``create`` is not of the shape known here."""
    resource_type: Any = type(resource)
    learned = _template(resource_type)
    if learned is None:
        return resource
    template, is_async = learned
    return (AsyncDirectCompletions if is_async else DirectCompletions)(resource, template)
