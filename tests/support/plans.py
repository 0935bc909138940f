"""Plans and tools the executor tests share."""

from __future__ import annotations

from typing import Any

from rat_langchain.plans.plan import Plan, Step

__all__ = ["chain_plan", "echo"]


async def echo(args: dict[str, Any]) -> dict[str, Any]:
    return {"got": args}


def chain_plan() -> Plan:
    return Plan(
        steps=[
            Step(id="A", tool="echo", args={"x": 1}, verify=True),
            Step(id="B", tool="echo", args={"y": "$A.got.x"}),
            Step(id="C", tool="mark", args={"z": "$B"}),
        ]
    )
