"""Deterministic content: chat answers, JSON that fits a schema, and embeddings in which texts that
share words are close (a signed, hashed bag of words, L2-normalised)."""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
_MAX_DEPTH = 8


def embed(text: str, dimensions: int) -> np.ndarray:
    """A unit vector for ``text``: each word adds ±1 at a hashed position."""
    vector = np.zeros(dimensions, dtype=np.float32)
    words = _WORD.findall(text.lower()) or [text]
    for word in words:
        position, sign = _slot(word, dimensions)
        vector[position] += sign
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:  # words cancelled out: fall back to a fixed direction so the vector is valid
        vector[0] = 1.0
        norm = 1.0
    vector /= norm
    return vector


@lru_cache(maxsize=1 << 16)
def _slot(word: str, dimensions: int) -> tuple[int, float]:
    """Where ``word`` lands and with which sign (cached: corpora repeat their words, and the
    simulator's CPU is taken from the client it serves on a small machine)."""
    digest = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
    return digest % dimensions, 1.0 if (digest >> 63) & 1 else -1.0


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(
                    str(part.get("text", "")) for part in content if isinstance(part, dict)
                )
            return str(content or "")
    return ""


_FILLER = (
    "this text comes from the rat_langchain simulator and stands in for what a real model "
    "would write in reply"
)


def default_answer(messages: list[dict[str, Any]], words: int) -> str:
    """``words`` words: 'Simulated answer about' the user's last words, then filler."""
    echo = _WORD.findall(last_user_text(messages))[-8:] or ["nothing"]
    out = ["Simulated", "answer", "about", *echo, "-"]
    while len(out) < words:
        out.extend(_FILLER.split())
    return " ".join(out[:words]) + "."


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return _resolve(node, root) if isinstance(node, dict) else {}
    return schema


_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_QUOTED = re.compile(r"\"([^\"\n]{1,200})\"|'([^'\n]{1,200})'")


class Hints:
    """Values a prompt names, handed out in order: numbers for numeric fields, quoted text for
    string fields. So ``magic_function(3)`` is called with 3, as a model reading the prompt
    would, and a test of tool calling checks something."""

    def __init__(self, text: str) -> None:
        self.numbers = [float(n) for n in _NUMBER.findall(text)]
        self.quoted = [a or b for a, b in _QUOTED.findall(text)]

    def number(self) -> float | None:
        return self.numbers.pop(0) if self.numbers else None

    def string(self) -> str | None:
        return self.quoted.pop(0) if self.quoted else None


def json_from_schema(
    schema: dict[str, Any],
    *,
    text: str = "example",
    root: dict[str, Any] | None = None,
    depth: int = 0,
    hints: Hints | None = None,
) -> Any:
    """A value valid against ``schema`` (the subset OpenAI's structured outputs accept), its
    numbers and strings taken from ``hints`` (the prompt) where it names some."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if depth > _MAX_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        options = [s for s in schema.get(key, []) if _resolve(s, root).get("type") != "null"]
        if options or schema.get(key):
            chosen = options[0] if options else schema[key][0]
            return json_from_schema(chosen, text=text, root=root, depth=depth + 1, hints=hints)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part, root))
        return json_from_schema(merged, text=text, root=root, depth=depth + 1, hints=hints)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props: dict[str, Any] = schema.get("properties", {})
        return {
            name: json_from_schema(sub, text=text, root=root, depth=depth + 1, hints=hints)
            for name, sub in props.items()
        }
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        item = schema.get("items", {})
        return [
            json_from_schema(item, text=text, root=root, depth=depth + 1, hints=hints)
            for _ in range(count)
        ]
    if kind in ("integer", "number"):
        found = hints.number() if hints is not None else None
        value = found if found is not None else float(schema.get("minimum", 1))
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    quoted = hints.string() if hints is not None else None
    return quoted if quoted is not None else text


def all_text(messages: list[dict[str, Any]]) -> str:
    """Every message's text, in order (instructions often sit in the system message)."""
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts += [str(p.get("text", "")) for p in content if isinstance(p, dict)]
        else:
            parts.append(str(content or ""))
    return "\n".join(parts)


def structured_content(
    response_format: dict[str, Any], text: str, instructions: str = ""
) -> str | None:
    """JSON text for a ``response_format`` request, or None when plain text was asked for.
    JSON mode answers with the keys the instructions name in quotes (``'setup' and
    'punchline'``), as a model following them would."""
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return json.dumps(json_from_schema(schema, text=text, hints=Hints(instructions)))
    if kind == "json_object":
        schema = _schema_in(instructions)
        if schema is not None:  # format instructions that carry the schema (PydanticOutputParser)
            return json.dumps(json_from_schema(schema, text=text))
        keys = list(dict.fromkeys(a or b for a, b in _QUOTED.findall(instructions)))
        if not keys:
            return json.dumps({"answer": text})
        return json.dumps({key: _typed(key, instructions, text) for key in keys})
    return None


_TYPE_WORDS = (
    (re.compile(r"\b(?:int|integer|whole number|count)\b", re.I), 1),
    (re.compile(r"\b(?:float|number|decimal|score)\b", re.I), 1.0),
    (re.compile(r"\b(?:bool|boolean|true or false|yes or no)\b", re.I), True),
    (re.compile(r"\b(?:list|array)\b", re.I), None),
)


def _typed(key: str, instructions: str, text: str) -> Any:
    """The value of a JSON-mode key, of the type the instructions give it near its name
    (``'rating' (an integer)``): a JSON-mode answer of strings only failed any integer field."""
    at = instructions.find(key)
    near = instructions[at + len(key) + 1 : at + len(key) + 60] if at >= 0 else ""
    near = re.split(r"[\"']", near, maxsplit=1)[0]  # up to the next key
    for pattern, value in _TYPE_WORDS:
        if pattern.search(near):
            return [text] if value is None else value
    return text


def _schema_in(instructions: str) -> dict[str, Any] | None:
    """The first JSON object with ``properties`` in ``instructions`` (at most 50 tried)."""
    decoder = json.JSONDecoder()
    start = instructions.find("{")
    for _ in range(50):
        if start < 0:
            return None
        try:
            found, _ = decoder.raw_decode(instructions, start)
        except ValueError:
            found = None
        if isinstance(found, dict) and isinstance(found.get("properties"), dict):
            return found
        start = instructions.find("{", start + 1)
    return None


def chosen_tool(request: dict[str, Any]) -> dict[str, Any] | None:
    """The function a default answer calls: the forced one, else the first until a tool answered."""
    tools = [
        t.get("function", {}) for t in request.get("tools") or [] if t.get("type") == "function"
    ]
    if not tools:
        return None
    choice = request.get("tool_choice", "auto")
    if choice == "none":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((t for t in tools if t.get("name") == name), None)
    messages = request.get("messages") or []
    if choice == "auto" and messages and messages[-1].get("role") == "tool":
        return None
    return tools[0]
