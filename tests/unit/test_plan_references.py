"""Plan references are untrusted (an LLM writes them): they read data and reach no code."""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import pytest
from pydantic import BaseModel, PrivateAttr

from rat_langchain import ParallelPlanExecutor, Plan, PlanError, Step
from rat_langchain.plans.plan import MAX_ARG_DEPTH, resolve_path

SECRET = "sk-SECRET-never-reached"


class Config(BaseModel):
    name: str = "prod"
    _api_key: str = PrivateAttr(default=SECRET)

    def key(self) -> str:
        return self._api_key


@dataclasses.dataclass
class Hit:
    title: str
    score: float
    _token: str = SECRET

    def reveal(self) -> str:
        return self._token


class Plain:
    """An object that is neither a model nor a dataclass: nothing of it is reachable."""

    def __init__(self) -> None:
        self.visible = "not data by contract"
        self._secret = SECRET


RESULT: dict[str, Any] = {
    "config": Config(),
    "hits": [Hit("a", 0.9), Hit("b", 0.5)],
    "plain": Plain(),
    "fn": len,
    "module": json,
    "cls": Hit,
    "nested": {"items": [{"v": 1}, {"v": [2, 3]}]},
}


async def test_the_api_key_attack_of_the_review_fails() -> None:
    seen: list[Any] = []

    async def leak(args: dict[str, Any]) -> str:
        seen.append(args["value"])
        return "ok"

    async def produce(args: dict[str, Any]) -> Any:
        return Config()

    plan = Plan(
        steps=[
            Step(id="s1", tool="produce"),
            Step(
                id="s2",
                tool="leak",
                args={"value": "$s1.__class__.__init__.__globals__.pool.config._api_key"},
            ),
            Step(id="s3", tool="leak", args={"value": "$s1.key"}),
            Step(id="s4", tool="leak", args={"value": "$s1._api_key"}),
        ]
    )
    tools = {"produce": produce, "leak": leak}
    result = await ParallelPlanExecutor(tools).aexecute(plan)
    for step in ("s2", "s3", "s4"):
        assert isinstance(result.steps[step].error, PlanError), step
    assert seen == []
    assert SECRET not in repr(result)


def test_public_fields_of_models_and_dataclasses_and_containers_are_reachable() -> None:
    assert resolve_path(RESULT, ["config", "name"], "$s.config.name") == "prod"
    assert resolve_path(RESULT, ["hits", "1", "title"], "$s.hits.1.title") == "b"
    assert resolve_path(RESULT, ["nested", "items", "-1", "v", "0"], "$s") == 2
    for path in (["plain", "visible"], ["fn"], ["module"], ["cls"], ["hits", "0", "reveal"]):
        with pytest.raises(PlanError):
            resolve_path(RESULT, path, "$s." + ".".join(path))


def test_random_paths_never_reach_private_state_or_code() -> None:
    rng = random.Random(7)
    words = [
        "config", "hits", "plain", "fn", "module", "cls", "nested", "items", "v", "name",
        "title", "score", "visible", "key", "reveal", "model_dump", "model_fields",
        "__class__", "__dict__", "__init__", "__globals__", "_api_key", "_token", "_secret",
        "__builtins__", "__module__", "0", "1", "-1", "2", "dumps", "__code__", "mro",
    ]  # fmt: skip
    reached = 0
    for _ in range(5000):
        path = [rng.choice(words) for _ in range(rng.randint(1, 6))]
        try:
            value = resolve_path(RESULT, path, "$s")
        except PlanError:
            continue
        reached += 1
        assert not any(part.startswith("_") for part in path), path
        assert not callable(value), path
        assert value != SECRET, path  # (a whole object may hold it: that is its own business)
    assert reached > 100  # data was reachable all along


async def test_a_literal_dollar_is_written_as_two() -> None:
    async def echo(args: dict[str, Any]) -> str:
        return str(args["text"])

    plan = Plan(
        steps=[
            Step(id="s1", tool="echo", args={"text": "hi"}),
            Step(id="s2", tool="echo", args={"text": "echo $$HOME costs $$5, not $$s1: $s1"}),
            Step(id="s3", tool="echo", args={"text": "$$s1"}),
        ]
    )
    assert plan.steps[2].depends_on() == []  # $$s1 is text, not a reference
    result = await ParallelPlanExecutor({"echo": echo}).aexecute(plan)
    assert result.steps["s2"].value == "echo $HOME costs $5, not $s1: hi"
    assert result.steps["s3"].value == "$s1"


def test_arguments_nested_too_deeply_are_refused_when_the_plan_is_built() -> None:
    deep: Any = "leaf"
    for _ in range(1000):
        deep = {"x": [deep]}
    with pytest.raises(PlanError, match=f"deeper than {MAX_ARG_DEPTH}"):
        Step(id="s1", tool="t", args={"a": deep})
    fine: Any = "leaf"
    for _ in range(MAX_ARG_DEPTH // 2 - 1):
        fine = {"x": [fine]}
    assert Step(id="s1", tool="t", args={"a": fine}).args
