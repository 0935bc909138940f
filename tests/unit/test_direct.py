"""pool._direct: plain chat requests skip the SDK's parameter walk, and what goes on the wire is
byte for byte what the SDK's own ``create`` sends; anything else goes through ``create``."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest
from pydantic import BaseModel

from rat_langchain.pool._direct import AsyncDirectCompletions, DirectCompletions, _plain, direct

_ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
_STREAM = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    b"data: [DONE]\n\n"
)
_VARYING = {"x-stainless-retry-count", "x-stainless-read-timeout"}


class _Recorder:
    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if json.loads(request.content).get("stream"):
            return httpx2.Response(
                200, content=_STREAM, headers={"content-type": "text/event-stream"}
            )
        return httpx2.Response(200, json=_ANSWER, headers={"x-ratelimit-limit-requests": "60"})

    def wire(self, index: int) -> tuple[str, str, dict[str, str], Any]:
        request = self.requests[index]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _VARYING}
        return request.method, str(request.url), headers, json.loads(request.content)


def _async_client(recorder: _Recorder) -> openai.AsyncOpenAI:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(recorder))
    return openai.AsyncOpenAI(api_key="sk-test", base_url="http://x/v1", http_client=http)


def _sync_client(recorder: _Recorder) -> openai.OpenAI:
    http = httpx2.Client(transport=httpx2.MockTransport(recorder))
    return openai.OpenAI(api_key="sk-test", base_url="http://x/v1", http_client=http)


_PAYLOADS: list[dict[str, Any]] = [
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False},
    {
        "model": "m",
        "messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "q"}],
        "max_tokens": 20,
        "temperature": 0.0,
        "stop": ["\n"],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "response_format": {"type": "json_object"},
        "extra_headers": {"X-Mine": "1"},
        "extra_query": {"q": "1"},
        "extra_body": {"custom": [1, 2]},
        "timeout": 12.5,
    },
]


@pytest.mark.parametrize("payload", _PAYLOADS)
@pytest.mark.parametrize("raw", [False, True])
async def test_async_plain_requests_are_what_the_sdk_sends(
    payload: dict[str, Any], raw: bool
) -> None:
    recorder = _Recorder()
    resource = _async_client(recorder).chat.completions
    wrapped = direct(resource)
    assert isinstance(wrapped, AsyncDirectCompletions)
    sdk, ours = (
        (resource.with_raw_response, wrapped.with_raw_response)
        if raw
        else (
            resource,
            wrapped,
        )
    )
    theirs = await sdk.create(**payload)
    mine = await ours.create(**payload)
    assert recorder.wire(0) == recorder.wire(1)
    assert type(mine) is type(theirs)
    if raw:
        assert mine.headers["x-ratelimit-limit-requests"] == "60"
        mine, theirs = mine.parse(), theirs.parse()
    assert mine == theirs


@pytest.mark.parametrize("payload", _PAYLOADS)
def test_sync_plain_requests_are_what_the_sdk_sends(payload: dict[str, Any]) -> None:
    recorder = _Recorder()
    resource = _sync_client(recorder).chat.completions
    wrapped = direct(resource)
    assert isinstance(wrapped, DirectCompletions)
    theirs = resource.with_raw_response.create(**payload)
    mine = wrapped.with_raw_response.create(**payload)
    assert recorder.wire(0) == recorder.wire(1)
    assert mine.parse() == theirs.parse()
    assert wrapped.create(**payload) == resource.create(**payload)


async def test_streams_are_the_sdk_streams() -> None:
    recorder = _Recorder()
    resource = _async_client(recorder).chat.completions
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    theirs = [chunk async for chunk in await resource.create(**payload)]
    stream = await direct(resource).create(**payload)
    assert type(stream) is openai.AsyncStream
    assert [chunk async for chunk in stream] == theirs
    assert recorder.wire(0) == recorder.wire(1)


class _Answer(BaseModel):
    text: str


async def test_what_is_not_plain_json_goes_through_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pydantic response_format: the SDK's create refuses it (as plain ChatOpenAI's would);
    an unknown keyword: the SDK's TypeError; a generator: the SDK converts it."""
    recorder = _Recorder()
    wrapped = direct(_async_client(recorder).chat.completions)
    with pytest.raises(TypeError, match="parse"):
        await wrapped.create(model="m", messages=[], response_format=_Answer)
    with pytest.raises(TypeError, match="no_such_option"):
        await wrapped.create(model="m", messages=[], no_such_option=1)
    messages = ({"role": "user", "content": str(i)} for i in range(2))
    await wrapped.create(model="m", messages=messages)
    assert json.loads(recorder.requests[-1].content)["messages"][1]["content"] == "1"
    assert not recorder.requests[:-1]  # the refused ones sent nothing


def test_plain_is_json_as_written() -> None:
    assert _plain({"a": [1, 2.5, True, None, "x", ("t",)], "b": {"c": {}}})
    assert not _plain({1: "int key"})
    assert not _plain({"a": b"bytes"})
    assert not _plain({"a": _Answer(text="x")})
    deep: Any = "x"
    for _ in range(100_000):  # no recursion limit
        deep = [deep]
    assert _plain({"a": deep})


def test_an_sdk_of_another_shape_is_left_alone() -> None:
    class Other:
        async def create(self, *, model: str, messages: list[Any]) -> Any:
            return await self._post("/elsewhere", body={}, options={}, cast_to=dict)

        async def _post(self, *args: Any, **kwargs: Any) -> Any:
            return None

    resource = Other()
    assert direct(resource) is resource
