"""Latency summaries shared by the demo and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rat_langchain.metrics.collector import percentile


@dataclass(frozen=True)
class RunSummary:
    """One measured run: requests, wall time, latency percentiles and connection use."""

    label: str
    requests: int
    errors: int
    wall_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    connections: int

    @classmethod
    def of(
        cls, label: str, latencies_s: Sequence[float], errors: int, wall_s: float, connections: int
    ) -> RunSummary:
        ms = [x * 1000 for x in latencies_s]
        return cls(
            label,
            len(latencies_s) + errors,
            errors,
            wall_s,
            percentile(ms, 50),
            percentile(ms, 95),
            percentile(ms, 99),
            connections,
        )

    @classmethod
    def combined(
        cls, label: str, runs: Sequence[tuple[Sequence[float], int, float, int]]
    ) -> RunSummary:
        """One summary of several runs, each ``(latencies s, errors, wall s, connections)``:
        their requests, errors, wall time and connections summed, percentiles over all."""
        latencies = [x for run in runs for x in run[0]]
        opened = [run[3] for run in runs]
        return cls.of(
            label,
            latencies,
            sum(run[1] for run in runs),
            sum(run[2] for run in runs),
            -1 if -1 in opened else sum(opened),
        )

    @property
    def throughput(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def reuse(self) -> float:
        """1 - connections opened / requests sent."""
        return 0.0 if self.requests == 0 else max(0.0, 1 - self.connections / self.requests)


HEADER = (
    f"{'run':<34} {'reqs':>6} {'err':>4} {'wall s':>7} {'req/s':>7} "
    f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'TCP conns':>9} {'reuse':>6}"
)


def row(s: RunSummary) -> str:
    return (
        f"{s.label:<34} {s.requests:>6} {s.errors:>4} {s.wall_s:>7.2f} {s.throughput:>7.1f} "
        f"{s.p50_ms:>7.0f} {s.p95_ms:>7.0f} {s.p99_ms:>7.0f} {s.connections:>9} {s.reuse:>6.0%}"
    )


def markdown_table(rows: Sequence[RunSummary]) -> str:
    lines = [
        "| run | requests | errors | wall s | req/s "
        "| p50 ms | p95 ms | p99 ms | TCP conns | reuse |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in rows:
        lines.append(
            f"| {s.label} | {s.requests} | {s.errors} | {s.wall_s:.2f} | {s.throughput:.1f} | "
            f"{s.p50_ms:.0f} | {s.p95_ms:.0f} | {s.p99_ms:.0f} | {s.connections} | {s.reuse:.0%} |"
        )
    return "\n".join(lines)


def learned_lines(snapshot: dict[str, Any]) -> list[str]:
    """One line per (endpoint, model): the limits the limiter holds, where they come from, the
    burst (the enforcement window it found), and the most attempts in flight at once."""
    lines = []
    for key, row in snapshot["limits"].items():
        parts = []
        for dimension in ("requests", "tokens"):
            held = row.get(dimension)
            if held is None:
                parts.append(f"{dimension}: not limited")
                continue
            parts.append(
                f"{dimension} {held['per_minute']:,.0f}/min ({held['source']}), "
                f"burst {held['burst_s']:g} s"
            )
        in_flight = snapshot["series"].get(key, {}).get("max_in_flight", 0)
        model = key.rsplit(" ", 1)[-1]
        lines.append(f"  {model}: {'; '.join(parts)}; at most {in_flight} in flight")
    return lines
