"""ToolCatalog: the tools a planner may use, described once per tool set.

Rendering a tool's description means building its JSON schema from pydantic, which costs about a
millisecond a tool; a planner that re-renders twenty tools for every request spends that on
every request. The rendering is cached under a fingerprint of each tool's name, description and
argument schema, so it is rebuilt exactly when one of them changes (a tool added, removed,
renamed, re-described or given new arguments) and reused otherwise, across catalog instances.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from rat_langchain.errors import a_kind

__all__ = ["ToolCatalog"]


@dataclass(frozen=True)
class _Rendered:
    text: str
    specs: tuple[dict[str, Any], ...]


class ToolCatalog:
    """Named tools plus their cached description for the planner's prompt.

    ``tools`` is a sequence of LangChain tools or a mapping of name to tool (a ``BaseTool``, a
    Runnable or a plain callable, whose docstring describes it)::

        catalog = ToolCatalog([search, fetch, summarise])
        catalog.render()          # the prompt text, built once per tool set
        catalog.names             # ["fetch", "search", "summarise"]
    """

    _cache: ClassVar[OrderedDict[str, _Rendered]] = OrderedDict()
    _cache_lock: ClassVar[threading.Lock] = threading.Lock()
    _cache_size: ClassVar[int] = 64
    builds: ClassVar[int] = 0  # renders done (cache misses), for tests and metrics
    hits: ClassVar[int] = 0

    def __init__(
        self, tools: Mapping[str, Any] | Sequence[BaseTool], *, cache: bool = True
    ) -> None:
        named = dict(tools) if isinstance(tools, Mapping) else {t.name: t for t in tools}
        if isinstance(tools, Sequence) and len(named) != len(tools):
            raise ValueError("two tools in the catalog have the same name")
        for name, tool in named.items():
            if not (callable(tool) or isinstance(tool, Runnable)):
                raise TypeError(f"tool {name!r} is {a_kind(tool)}, not a tool")
        self.tools: dict[str, Any] = named
        self.cache = cache

    def __repr__(self) -> str:
        return f"ToolCatalog({self.names})"

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def __len__(self) -> int:
        return len(self.tools)

    @property
    def names(self) -> list[str]:
        return sorted(self.tools)

    def fingerprint(self) -> str:
        """A hash of every tool's name, description and argument schema. Cheap: a pydantic
        schema class stands for itself (classes do not change), a dict schema is hashed."""
        digest = hashlib.sha256()
        for name in self.names:
            description, schema = _describe(self.tools[name])
            digest.update(name.encode())
            digest.update(b"\0" + description.encode() + b"\0")
            if isinstance(schema, dict):
                digest.update(json.dumps(schema, sort_keys=True, default=str).encode())
            elif isinstance(schema, Runnable):  # its schema is derived anew on each call
                digest.update(f"runnable@{id(schema)}".encode())
            elif schema is not None:
                digest.update(f"{schema.__module__}.{schema.__qualname__}@{id(schema)}".encode())
            digest.update(b"\1")
        return digest.hexdigest()

    def render(self) -> str:
        """The tools as prompt text: name, description and JSON arguments of each."""
        return self._rendered().text

    def specs(self) -> list[dict[str, Any]]:
        """The tools in OpenAI function format (``{"type": "function", "function": ...}``)."""
        return [dict(spec) for spec in self._rendered().specs]

    def _rendered(self) -> _Rendered:
        if not self.cache:
            return self._build()
        key = self.fingerprint()
        cls = type(self)
        with cls._cache_lock:
            found = cls._cache.get(key)
            if found is not None:
                cls._cache.move_to_end(key)
                ToolCatalog.hits += 1
                return found
        rendered = self._build()
        with cls._cache_lock:
            cls._cache[key] = rendered
            while len(cls._cache) > cls._cache_size:
                cls._cache.popitem(last=False)
        return rendered

    def _build(self) -> _Rendered:
        ToolCatalog.builds += 1
        specs = tuple(_spec(name, self.tools[name]) for name in self.names)
        lines = []
        for spec in specs:
            function = spec["function"]
            params = function.get("parameters") or {}
            args = json.dumps(params.get("properties") or {}, sort_keys=True)
            lines.append(f"- {function['name']}: {function.get('description', '')}\n  args: {args}")
        return _Rendered("\n".join(lines), specs)


def _describe(tool: Any) -> tuple[str, Any]:
    """(description, schema) where schema is a pydantic class, a dict, None, or for a plain
    Runnable the Runnable itself (a new object is a new tool: its schema is not cached)."""
    if isinstance(tool, BaseTool):
        return tool.description, tool.args_schema
    if isinstance(tool, Runnable):
        return str(getattr(tool, "description", "") or tool.get_name()), tool
    description = inspect.getdoc(tool) or ""
    return description, getattr(tool, "args_schema", None)


def _spec(name: str, tool: Any) -> dict[str, Any]:
    if isinstance(tool, BaseTool):
        spec = convert_to_openai_tool(tool)
        spec["function"]["name"] = name
        return spec
    description, schema = _describe(tool)
    parameters: dict[str, Any] = {"type": "object", "properties": {}}
    if isinstance(schema, dict):
        parameters = schema
    elif isinstance(schema, Runnable):
        parameters = schema.get_input_jsonschema()
    elif schema is not None:
        parameters = schema.model_json_schema()
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }
