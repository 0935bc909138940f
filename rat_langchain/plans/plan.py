"""Plan and Step: a plan is a DAG of tool steps, checked before anything runs.

A step depends on the steps it lists in ``dependencies`` and on every step its ``args`` refer to:
``$step3`` (the whole result), ``$step3.field`` or ``$step3.items.0.name`` (a path into it), as a
whole value or inside a string, at any depth of nested dicts and lists. Validation rejects, each
with its own :class:`PlanError`: a duplicate id, a reference to a missing step, a self-dependency,
a cycle (the error names it) and, when the tool names are given, an unknown tool.

Plans are often written by an LLM, so they are untrusted (docs/security.md): a reference reads
data only (mapping keys, sequence indexes, the public fields of pydantic models and
dataclasses), never an attribute starting with ``_``, a callable, a module or a class; ``$$``
writes a literal ``$`` (``"echo $$HOME"``); arguments nested deeper than ``MAX_ARG_DEPTH`` are
refused when the plan is built.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rat_langchain.errors import PlanError

__all__ = ["MAX_ARG_DEPTH", "Plan", "PlanError", "Reference", "Step", "find_references"]

# $id or $id.path.to.field; ids are identifiers such as step3, fetch_docs, s-2. ``$$`` is an
# escaped ``$`` (matched first, so ``$$step`` is the text ``$step``, not a reference).
REFERENCE = re.compile(r"\$\$|\$([A-Za-z_][A-Za-z0-9_\-]*)((?:\.[A-Za-z0-9_\-]+)*)")
# Deepest nesting of dicts and lists in a step's arguments.
MAX_ARG_DEPTH = 32


class Reference(BaseModel):
    """One ``$step.path`` reference found in a step's arguments."""

    model_config = ConfigDict(frozen=True)

    step: str
    path: tuple[str, ...] = ()
    text: str
    whole: bool  # the whole argument value is this reference (its type is kept)


def find_references(value: Any) -> Iterator[Reference]:
    """Every reference in ``value``, walking nested dicts, lists and tuples."""
    if isinstance(value, str):
        if "$" not in value:
            return
        whole = REFERENCE.fullmatch(value.strip())
        whole = whole if whole is not None and whole.group(1) is not None else None
        for match in REFERENCE.finditer(value):
            if match.group(1) is None:
                continue  # $$: a literal $
            path = tuple(p for p in match.group(2).split(".") if p)
            yield Reference(step=match.group(1), path=path, text=match.group(0), whole=bool(whole))
    elif isinstance(value, dict):
        for item in value.values():
            yield from find_references(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from find_references(item)


class Step(BaseModel):
    """One tool call. ``tool`` (or its alias ``action``) names a tool of the executor."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    tool: str = Field(min_length=1, alias="action")
    args: dict[str, Any] = Field(default_factory=dict)
    dependencies: list[str] = Field(default_factory=list)
    verify: bool = False
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _tool_or_action(cls, data: Any) -> Any:
        if isinstance(data, dict):
            _check_depth(data.get("args"), data.get("id"))
        if isinstance(data, dict) and "tool" in data and "action" not in data:
            data = {**data, "action": data["tool"]}
            data.pop("tool")
        return data

    def references(self) -> list[Reference]:
        return list(find_references(self.args))

    def depends_on(self) -> list[str]:
        """Listed and referenced steps, each once, in first-seen order."""
        seen: dict[str, None] = dict.fromkeys(self.dependencies)
        for ref in self.references():
            seen.setdefault(ref.step)
        return list(seen)


class Plan(BaseModel):
    """A DAG of steps. Construction checks ids, references and cycles; ``validate_tools`` checks
    tool names against a catalog.

    Example::

        plan = Plan(steps=[
            Step(id="s1", tool="search", args={"q": "FAISS"}),
            Step(id="s2", tool="summarise", args={"text": "$s1.items.0.snippet"}),
        ])
        plan.levels()   # [["s1"], ["s2"]]
    """

    model_config = ConfigDict(extra="forbid")

    steps: list[Step]
    goal: str = ""
    context: dict[str, Any] = Field(default_factory=dict)  # e.g. the planner's intent and route

    @model_validator(mode="after")
    def _check(self) -> Plan:
        ids: set[str] = set()
        for step in self.steps:
            if step.id in ids:
                raise PlanError(f"step id {step.id!r} is used twice")
            ids.add(step.id)
        for step in self.steps:
            for dep in step.dependencies:
                if dep == step.id:
                    raise PlanError(f"step {step.id!r} depends on itself")
                if dep not in ids:
                    raise PlanError(
                        f"step {step.id!r} depends on {dep!r}, which is not in the plan"
                    )
            for ref in step.references():
                if ref.step == step.id:
                    raise PlanError(f"step {step.id!r} refers to itself with {ref.text!r}")
                if ref.step not in ids:
                    raise PlanError(
                        f"step {step.id!r} refers to {ref.text!r}, "
                        f"but there is no step {ref.step!r}"
                    )
        cycle = self._find_cycle()
        if cycle:
            raise PlanError("the plan has a cycle: " + " -> ".join(cycle))
        return self

    def _find_cycle(self) -> list[str] | None:
        """A cycle if there is one (iterative: plans of 10,000 steps must not hit the recursion
        limit). Nodes left over by Kahn's algorithm each have a dependency among themselves, so
        following dependencies from any of them must come back to a node already seen."""
        depth = self._depths()
        if len(depth) == len(self.steps):
            return None
        deps = self.dependencies()
        left = [step.id for step in self.steps if step.id not in depth]
        node = left[0]
        path: list[str] = []
        seen: dict[str, int] = {}
        while node not in seen:
            seen[node] = len(path)
            path.append(node)
            node = next(d for d in deps[node] if d not in depth)
        cycle = path[seen[node] :]
        return [*cycle, node]

    def _depths(self) -> dict[str, int]:
        """Longest chain of dependencies below each step, for every step not on a cycle."""
        deps = self.dependencies()
        waiting = {node: len(set(d)) for node, d in deps.items()}
        users: dict[str, list[str]] = {node: [] for node in deps}
        for node, ds in deps.items():
            for d in set(ds):
                users[d].append(node)
        ready = [step.id for step in self.steps if waiting[step.id] == 0]
        depth = dict.fromkeys(ready, 0)
        while ready:
            node = ready.pop()
            for user in users[node]:
                depth[user] = max(depth.get(user, 0), depth[node] + 1)
                waiting[user] -= 1
                if waiting[user] == 0:
                    ready.append(user)
        return {node: d for node, d in depth.items() if waiting[node] == 0}

    def validate_tools(self, tools: Iterable[str]) -> None:
        """Raise :class:`PlanError` for a step whose tool is not among ``tools``."""
        known = set(tools)
        for step in self.steps:
            if step.tool not in known:
                raise PlanError(
                    f"step {step.id!r} uses tool {step.tool!r}, which is not one of {sorted(known)}"
                )

    def check_listed_dependencies(self) -> None:
        """Strict mode (``parallel_execution.dependency_analysis: false``): every step a step
        refers to must be among its listed dependencies, directly or through them; PlanError
        names the first reference that is not."""
        listed = {step.id: step.dependencies for step in self.steps}
        for step in self.steps:
            above: set[str] = set()
            stack = list(step.dependencies)
            while stack:
                node = stack.pop()
                if node not in above:
                    above.add(node)
                    stack.extend(listed[node])
            for ref in step.references():
                if ref.step not in above:
                    raise PlanError(
                        f"step {step.id!r} refers to {ref.text!r} but does not list "
                        f"{ref.step!r} in its dependencies (dependency analysis is off)"
                    )

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def dependencies(self) -> dict[str, list[str]]:
        return {step.id: step.depends_on() for step in self.steps}

    def order(self) -> list[str]:
        """A topological order, stable with respect to the plan's own order."""
        return [step_id for level in self.levels() for step_id in level]

    def levels(self) -> list[list[str]]:
        """Dependency levels, for display: level n holds steps whose longest chain of
        dependencies has n steps. The executor does not wait for levels."""
        depth = self._depths()
        levels: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for step in self.steps:
            levels[depth[step.id]].append(step.id)
        return levels


def _check_depth(args: Any, step: Any) -> None:
    """``PlanError`` if ``args`` nest deeper than ``MAX_ARG_DEPTH`` (walked without recursion,
    so a hostile plan cannot end in a bare ``RecursionError``)."""
    pending: list[tuple[Any, int]] = [(args, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, Mapping):
            children: Iterable[Any] = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            continue
        if depth >= MAX_ARG_DEPTH:
            raise PlanError(
                f"step {step!r}: arguments nest deeper than {MAX_ARG_DEPTH} levels of dicts "
                "and lists"
            )
        pending.extend((child, depth + 1) for child in children)


def _is_data(value: Any) -> bool:
    return not (callable(value) or isinstance(value, type | ModuleType))


def resolve_path(value: Any, path: Iterable[str], text: str) -> Any:
    """Follow ``path`` into a step result: mapping keys, sequence indexes, and the public
    fields of pydantic models and dataclasses. Nothing else: no attribute starting with ``_``,
    no method, module or class, so a reference written by an LLM reads data and reaches no
    code (``$s1.__class__.__init__.__globals__`` is a ``PlanError``)."""
    for part in path:
        if isinstance(value, Mapping):
            if part not in value:
                raise PlanError(f"{text}: the result has no field {part!r}")
            value = value[part]
        elif isinstance(value, list | tuple) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(value) <= index < len(value):
                raise PlanError(f"{text}: index {index} is out of range ({len(value)} items)")
            value = value[index]
        elif not part.startswith("_") and part in _public_fields(value):
            value = getattr(value, part)
        else:
            raise PlanError(
                f"{text}: the result has no field {part!r} (references read mapping keys, "
                "sequence indexes and public fields of pydantic models and dataclasses)"
            )
        if not _is_data(value):
            raise PlanError(f"{text}: {part!r} is not data (a callable, module or class)")
    return value


def _public_fields(value: Any) -> set[str]:
    model_fields = getattr(type(value), "model_fields", None)
    if isinstance(model_fields, dict) and hasattr(value, "model_dump"):  # pydantic v2
        return {name for name in model_fields if not name.startswith("_")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name for f in dataclasses.fields(value) if not f.name.startswith("_")}
    return set()
