"""OpenTelemetry export of :class:`~rat_langchain.metrics.collector.Metrics` (the ``otel`` extra).

Observable instruments read the metrics' snapshot when the SDK collects, so recording stays a
lock and an append with or without OpenTelemetry, and whatever exporter the application set up
(OTLP, Prometheus, console) receives the same figures as ``snapshot()`` and ``to_prometheus()``.
OpenTelemetry has no summary type: latency percentiles are a gauge with a ``quantile`` attribute,
as the Prometheus bridge spells them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from rat_langchain.metrics.instruments import INSTRUMENTS, Instrument

if TYPE_CHECKING:
    from rat_langchain.metrics.collector import Metrics

__all__ = ["instrument"]

# OpenTelemetry's semantic conventions name the error label error.type.
_OTEL_LABELS = {"type": "error.type"}


class _Snapshots:
    """One snapshot per collection: every instrument's callback runs in the same collection,
    and a snapshot sorts each series' latencies, so it is taken once and reused briefly."""

    def __init__(self, metrics: Metrics, max_age_s: float) -> None:
        self._metrics = metrics
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._taken = -float("inf")
        self._value: dict[str, Any] = {}

    def get(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if now - self._taken > self._max_age_s:
                self._value = self._metrics.snapshot()
                self._taken = now
            return self._value


def instrument(
    metrics: Metrics, meter: Any = None, *, prefix: str = "rat", snapshot_max_age_s: float = 0.5
) -> list[Any]:
    """Publish ``metrics`` through OpenTelemetry and return the instruments created.

    ``meter`` defaults to ``opentelemetry.metrics.get_meter("rat_langchain")`` (the global
    provider the application configured). The instruments of one collection share a snapshot
    up to ``snapshot_max_age_s`` old. Example::

        from rat_langchain.metrics.otel import instrument
        instrument(pool.metrics)
    """
    try:
        from opentelemetry import metrics as otel_metrics
        from opentelemetry.metrics import CallbackOptions, Observation
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(
            "OpenTelemetry export needs the 'otel' extra: pip install 'rat-langchain[otel]'"
        ) from exc
    if meter is None:
        meter = otel_metrics.get_meter("rat_langchain")
    snapshots = _Snapshots(metrics, snapshot_max_age_s)

    def callback(row: Instrument) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            for labels, value in row.samples(snapshots.get()):
                yield Observation(value, {_OTEL_LABELS.get(k, k): v for k, v in labels.items()})

        return observe

    made = []
    for row in INSTRUMENTS:
        create = (
            meter.create_observable_counter
            if row.kind == "counter"
            else meter.create_observable_gauge  # OpenTelemetry has no summary type
        )
        made.append(
            create(f"{prefix}.{row.otel}", [callback(row)], unit=row.unit, description=row.help)
        )
    return made
