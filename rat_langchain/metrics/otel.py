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
from typing import Any

from rat_langchain.metrics.collector import Metrics

__all__ = ["instrument"]

_QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))


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


def _series_attributes(key: str) -> dict[str, str]:
    endpoint, _, model = key.rpartition(" ") if " " in key else ("", "", key)
    return {"endpoint": endpoint, "model": model}


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

    def per_series(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            for key, values in snapshots.get()["series"].items():
                yield Observation(values[field], _series_attributes(key))

        return observe

    def errors(_options: CallbackOptions) -> Iterable[Observation]:
        for key, values in snapshots.get()["series"].items():
            for error_type, count in values["errors"].items():
                yield Observation(count, {**_series_attributes(key), "error.type": error_type})

    def latency(_options: CallbackOptions) -> Iterable[Observation]:
        for key, values in snapshots.get()["series"].items():
            for quantile, name in _QUANTILES:
                seconds = values["latency_ms"][name] / 1000
                yield Observation(seconds, {**_series_attributes(key), "quantile": quantile})

    def transitions(_options: CallbackOptions) -> Iterable[Observation]:
        for change, count in snapshots.get()["breaker_transitions"].items():
            yield Observation(count, {"change": change})

    def connections(_options: CallbackOptions) -> Iterable[Observation]:
        opened_reused = snapshots.get()["connections"]
        yield Observation(opened_reused["opened"], {"kind": "opened"})
        yield Observation(opened_reused["reused"], {"kind": "reused"})

    counter = meter.create_observable_counter
    return [
        counter(f"{prefix}.calls", [per_series("calls")], unit="{call}", description="Calls."),
        counter(f"{prefix}.errors", [errors], unit="{call}", description="Failed calls by type."),
        counter(
            f"{prefix}.rate_limited",
            [per_series("rate_limited")],
            unit="{response}",
            description="429 answers, retried or not.",
        ),
        counter(
            f"{prefix}.retries", [per_series("retries")], unit="{retry}", description="Retries."
        ),
        counter(
            f"{prefix}.limiter.wait",
            [per_series("limiter_wait_s")],
            unit="s",
            description="Time spent waiting for the rate limiter.",
        ),
        meter.create_observable_gauge(
            f"{prefix}.latency",
            [latency],
            unit="s",
            description="Latency percentiles of successful calls (attribute quantile).",
        ),
        counter(
            f"{prefix}.breaker.transitions",
            [transitions],
            unit="{change}",
            description="Circuit breaker state changes.",
        ),
        counter(
            f"{prefix}.tcp.connections",
            [connections],
            unit="{connection}",
            description="TCP connections opened and reused.",
        ),
    ]
