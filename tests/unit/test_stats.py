"""The percentiles of the metrics and the demo's run summaries."""

from __future__ import annotations

from rat_langchain._demo.stats import RunSummary
from rat_langchain.metrics.collector import percentile


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([], 50) == 0.0


def test_run_summary_reuse() -> None:
    summary = RunSummary.of("x", [0.1] * 500, errors=0, wall_s=1.0, connections=100)
    assert summary.reuse == 0.8
    assert summary.throughput == 500
