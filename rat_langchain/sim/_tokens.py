"""The simulator's own token counts: what a real endpoint charges a request.

Why its own: the simulator stands in for the server, so it must not share the client's
estimate. If both used one function, a client-side miscount would never show as a 429 in a test.
This module uses ``bpe_openai`` directly and charges what OpenAI documents and bills: every
message (content, name, tool calls) with its framing, the ``tools`` definitions, the
``response_format`` schema, and the completion budget (``max_tokens``) while the call runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import bpe_openai

__all__ = ["chat_prompt_tokens", "text_tokens", "truncate"]

_PER_MESSAGE = 3  # <|start|>{role}\n ... <|end|>
_PER_REPLY = 3  # <|start|>assistant<|message|>
_PER_TOOL = 8  # the namespace and type wrapping of each function definition
_PER_RESPONSE_FORMAT = 8  # the schema's framing in the system message


@lru_cache(maxsize=16)
def _encoding(model: str) -> bpe_openai.Encoding:
    try:
        return bpe_openai.get_encoding(bpe_openai.encoding_name_for_model(model))
    except (KeyError, ValueError):
        return bpe_openai.get_encoding("o200k_base")


_PIECE = 40_000  # the tokenizer refuses a million characters at once


def text_tokens(text: str, model: str) -> int:
    """Tokens of ``text`` for ``model`` (special tokens count as plain text), any length."""
    if len(text) <= _PIECE:
        return _short_tokens(text, model)
    encoding = _encoding(model)
    return sum(
        len(encoding.encode_ordinary(text[i : i + _PIECE])) for i in range(0, len(text), _PIECE)
    )


@lru_cache(maxsize=4096)
def _short_tokens(text: str, model: str) -> int:
    return len(_encoding(model).encode_ordinary(text)) if text else 0


def truncate(text: str, limit: int, model: str) -> tuple[str, bool]:
    """``text`` cut to at most ``limit`` tokens, and whether it was cut."""
    encoding = _encoding(model)
    tokens = encoding.encode_ordinary(text)
    if len(tokens) <= limit:
        return text, False
    return encoding.decode(tokens[:limit]), True


def _content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_content(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text") or "")
    return str(content)


def _schema(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def chat_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Prompt tokens of a chat completion request, as billed: messages, tools, response format."""
    model = str(body.get("model", ""))
    total = _PER_REPLY
    for message in body.get("messages") or ():
        total += _PER_MESSAGE + text_tokens(_content(message.get("content")), model)
        if message.get("name"):
            total += text_tokens(str(message["name"]), model)
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            total += text_tokens(str(function.get("name", "")), model)
            total += text_tokens(str(function.get("arguments", "")), model)
    tools: Sequence[Any] = body.get("tools") or ()
    for tool in tools:
        total += _PER_TOOL + text_tokens(_schema(tool.get("function", tool)), model)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        total += _PER_RESPONSE_FORMAT + text_tokens(_schema(response_format["json_schema"]), model)
    return total
