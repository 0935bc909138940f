"""Prometheus text exposition of a metrics snapshot, from the table of instruments (no client
library needed: serve the text on ``/metrics`` with any web framework)."""

from __future__ import annotations

from typing import Any

from rat_langchain.metrics.instruments import INSTRUMENTS

__all__ = ["render"]

_KINDS = {"counter": "counter", "gauge": "gauge", "quantiles": "summary"}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(snapshot: dict[str, Any], prefix: str = "rat") -> str:
    """The snapshot in Prometheus' text format, one ``# HELP`` / ``# TYPE`` block per figure."""
    lines: list[str] = []
    for instrument in INSTRUMENTS:
        name = f"{prefix}_{instrument.prometheus}"
        lines.append(f"# HELP {name} {instrument.help}")
        lines.append(f"# TYPE {name} {_KINDS[instrument.kind]}")
        for labels, value in instrument.samples(snapshot):
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{inner}}} {value:g}")
    return "\n".join(lines) + "\n"
