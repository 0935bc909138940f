"""ToolCatalog: rendered once per tool set, rebuilt exactly when a tool changes."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.tools import StructuredTool, tool
from pydantic import BaseModel

from rat_langchain import ToolCatalog


def make_tool(name: str, description: str, schema: type[BaseModel] | None = None) -> Any:
    async def run(**kwargs: Any) -> str:
        return "ok"

    return StructuredTool.from_function(
        coroutine=run, name=name, description=description, args_schema=schema
    )


class Query(BaseModel):
    query: str


class QueryAndLimit(BaseModel):
    query: str
    limit: int


def test_rendering_is_reused_while_tools_are_unchanged_and_rebuilt_when_one_changes() -> None:
    search = make_tool("search", "Search the web.", Query)
    fetch = make_tool("fetch", "Fetch a page.", Query)
    first = ToolCatalog([search, fetch])
    builds = ToolCatalog.builds
    text = first.render()
    assert ToolCatalog.builds == builds + 1
    assert "- search: Search the web." in text
    assert '"query"' in text
    # unchanged tools, even through a new catalog object: no rebuild
    assert ToolCatalog([fetch, search]).render() == text
    assert first.render() == text
    assert ToolCatalog.builds == builds + 1
    # a changed description, a changed schema, an added tool: each rebuilds once
    search.description = "Search the web, newest first."
    assert "newest first" in first.render()
    assert ToolCatalog.builds == builds + 2
    search.args_schema = QueryAndLimit
    assert '"limit"' in first.render()
    assert ToolCatalog.builds == builds + 3
    bigger = ToolCatalog([search, fetch, make_tool("summarise", "Summarise.", Query)])
    assert "- summarise: Summarise." in bigger.render()
    assert ToolCatalog.builds == builds + 4
    bigger.render()
    assert ToolCatalog.builds == builds + 4


def test_fingerprint_tracks_names_descriptions_and_schemas() -> None:
    a = ToolCatalog([make_tool("a", "A.", Query)])
    assert a.fingerprint() == ToolCatalog([make_tool("a", "A.", Query)]).fingerprint()
    assert a.fingerprint() != ToolCatalog([make_tool("b", "A.", Query)]).fingerprint()
    assert a.fingerprint() != ToolCatalog([make_tool("a", "B.", Query)]).fingerprint()
    assert a.fingerprint() != ToolCatalog([make_tool("a", "A.", QueryAndLimit)]).fingerprint()


def test_plain_callables_specs_and_bad_input() -> None:
    async def lookup(args: dict[str, Any]) -> str:
        """Look a word up in the dictionary."""
        return "x"

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    catalog = ToolCatalog({"lookup": lookup, "add": add}, cache=False)
    assert catalog.names == ["add", "lookup"]
    assert "add" in catalog
    assert len(catalog) == 2
    specs = {s["function"]["name"]: s["function"] for s in catalog.specs()}
    assert specs["lookup"]["description"] == "Look a word up in the dictionary."
    assert set(specs["add"]["parameters"]["properties"]) == {"a", "b"}
    with pytest.raises(TypeError, match="'x' is an int"):
        ToolCatalog({"x": 1})
    with pytest.raises(ValueError, match="same name"):
        ToolCatalog([add, add])
