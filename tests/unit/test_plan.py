"""Plan model: dependency analysis and validation before anything runs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rat_langchain.plans.plan import Plan, PlanError, Step, find_references, resolve_path


def test_references_in_nested_args_and_strings() -> None:
    args = {
        "query": "$s1",
        "filters": [{"source": "$s2.items.0.name"}, "plain"],
        "text": "compare $s3.summary with $s4",
        "n": 3,
    }
    refs = list(find_references(args))
    assert [(r.step, r.path, r.whole) for r in refs] == [
        ("s1", (), True),
        ("s2", ("items", "0", "name"), True),
        ("s3", ("summary",), False),
        ("s4", (), False),
    ]


def test_dependencies_are_listed_plus_referenced() -> None:
    plan = Plan(
        steps=[
            Step(id="s1", tool="search"),
            Step(id="s2", tool="search"),
            Step(
                id="s3", tool="merge", args={"a": "$s1.hits", "b": "see $s2"}, dependencies=["s1"]
            ),
            Step(id="s4", action="report", args={"x": "$s3"}),
        ]
    )
    assert plan.dependencies() == {"s1": [], "s2": [], "s3": ["s1", "s2"], "s4": ["s3"]}
    assert plan.levels() == [["s1", "s2"], ["s3"], ["s4"]]
    assert plan.order() == ["s1", "s2", "s3", "s4"]
    assert plan.step("s4").tool == "report"


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"id": "a", "tool": "t"}, {"id": "a", "tool": "t"}], "'a' is used twice"),
        ([{"id": "a", "tool": "t", "dependencies": ["a"]}], "depends on itself"),
        ([{"id": "a", "tool": "t", "args": {"x": "$a.f"}}], "refers to itself"),
        (
            [{"id": "a", "tool": "t", "dependencies": ["b"]}],
            "depends on 'b', which is not in the plan",
        ),
        ([{"id": "a", "tool": "t", "args": {"x": "use $zz.f"}}], "no step 'zz'"),
        (
            [
                {"id": "a", "tool": "t", "args": {"x": "$c"}},
                {"id": "b", "tool": "t", "dependencies": ["a"]},
                {"id": "c", "tool": "t", "args": {"y": ["$b.v"]}},
            ],
            "cycle: a -> c -> b -> a",
        ),
    ],
)
def test_invalid_plans_get_their_specific_error(
    steps: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(PlanError, match=message):
        Plan.model_validate({"steps": steps})


def test_unknown_tool_is_named() -> None:
    plan = Plan(steps=[Step(id="a", tool="serch")])
    with pytest.raises(PlanError, match="tool 'serch', which is not one of \\['search'\\]"):
        plan.validate_tools(["search"])


def test_bad_step_ids_and_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        Step(id="1bad", tool="t")
    with pytest.raises(ValidationError):
        Step.model_validate({"id": "a", "tool": "t", "unknown": 1})


def test_resolve_path_through_dicts_lists_and_attributes() -> None:
    result = {"items": [{"name": "x"}, {"name": "y"}]}
    assert resolve_path(result, ["items", "1", "name"], "$s.items.1.name") == "y"
    assert resolve_path(result, ["items", "-1", "name"], "$s.items.-1.name") == "y"
    with pytest.raises(PlanError, match="no field 'missing'"):
        resolve_path(result, ["missing"], "$s.missing")
    with pytest.raises(PlanError, match="index 5 is out of range"):
        resolve_path(result, ["items", "5"], "$s.items.5")


def test_a_10000_step_chain_validates_without_recursion_limits() -> None:
    steps = [Step(id="s0", tool="t")]
    steps += [Step(id=f"s{i}", tool="t", args={"x": f"$s{i - 1}"}) for i in range(1, 10_000)]
    plan = Plan(steps=steps)
    assert len(plan.levels()) == 10_000
    steps[0] = Step(id="s0", tool="t", args={"x": "$s9999"})
    with pytest.raises(PlanError, match="cycle"):
        Plan(steps=steps)
