import json
from typing import Literal

import numpy as np
from pydantic import BaseModel

from rat_langchain.sim._content import chosen_tool, embed, json_from_schema, structured_content


class Inner(BaseModel):
    name: str
    score: float


class Answer(BaseModel):
    title: str
    count: int
    tags: list[str]
    kind: Literal["a", "b"]
    inner: Inner
    maybe: Inner | None = None
    flag: bool


def test_json_from_pydantic_schema_is_valid() -> None:
    value = json_from_schema(Answer.model_json_schema(), text="hello")
    Answer.model_validate(value)
    assert value["title"] == "hello"


def test_structured_content_for_json_schema_format() -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": Answer.model_json_schema()},
    }
    content = structured_content(fmt, "x")
    assert content is not None
    Answer.model_validate(json.loads(content))
    assert structured_content({"type": "text"}, "x") is None


def test_embeddings_are_unit_vectors_and_shared_words_are_closer() -> None:
    a = embed("the cat sat on the mat", 256)
    b = embed("a cat on a mat", 256)
    c = embed("quarterly revenue grew strongly", 256)
    for v in (a, b, c):
        assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    assert float(a @ b) > float(a @ c)
    assert np.array_equal(embed("same text", 64), embed("same text", 64))


def test_tool_choice_rules() -> None:
    tools = [
        {"type": "function", "function": {"name": "search"}},
        {"type": "function", "function": {"name": "calc"}},
    ]
    user = [{"role": "user", "content": "hi"}]
    assert chosen_tool({"tools": tools, "messages": user})["name"] == "search"
    forced = {"type": "function", "function": {"name": "calc"}}
    assert chosen_tool({"tools": tools, "messages": user, "tool_choice": forced})["name"] == "calc"
    assert chosen_tool({"tools": tools, "messages": user, "tool_choice": "none"}) is None
    after_tool = [*user, {"role": "tool", "content": "42"}]
    assert chosen_tool({"tools": tools, "messages": after_tool}) is None
