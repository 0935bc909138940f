"""The table of instruments: every figure the metrics export, written once.

Each exporter (Prometheus text, OpenTelemetry) walks this table over one snapshot, so a figure
added here appears in both and the two cannot drift. A row names the figure for each exporter,
says what kind it is, and reads its samples (labels, value) from ``Metrics.snapshot()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["INSTRUMENTS", "Instrument", "series_labels"]

Samples = Iterator[tuple[dict[str, str], float]]
_QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))


@dataclass(frozen=True)
class Instrument:
    """One exported figure. ``kind``: a counter only grows; a quantile gauge carries a
    ``quantile`` label (a Prometheus summary, an OpenTelemetry gauge)."""

    prometheus: str
    otel: str
    kind: Literal["counter", "gauge", "quantiles"]
    unit: str
    help: str
    samples: Callable[[dict[str, Any]], Samples]


def series_labels(row: dict[str, Any]) -> dict[str, str]:
    """``{"endpoint", "model"}`` (and ``"tenant"`` when known) of a snapshot row: read from
    the row's own fields, never split out of its name (a model name may hold a space)."""
    labels = {"endpoint": str(row.get("endpoint", "")), "model": str(row.get("model", ""))}
    if row.get("tenant"):
        labels["tenant"] = str(row["tenant"])
    return labels


def _per_series(field: str) -> Callable[[dict[str, Any]], Samples]:
    def samples(snapshot: dict[str, Any]) -> Samples:
        for values in snapshot["series"].values():
            yield series_labels(values), values[field]

    return samples


def _errors(snapshot: dict[str, Any]) -> Samples:
    for values in snapshot["series"].values():
        for error_type, count in values["errors"].items():
            yield {**series_labels(values), "type": error_type}, count


def _latency(snapshot: dict[str, Any]) -> Samples:
    for values in snapshot["series"].values():
        for quantile, name in _QUANTILES:
            yield {**series_labels(values), "quantile": quantile}, values["latency_ms"][name] / 1000


def _limit(field: str) -> Callable[[dict[str, Any]], Samples]:
    """One figure of each limited dimension the limiter holds (``RateLimiter.limits``)."""

    def samples(snapshot: dict[str, Any]) -> Samples:
        for row in snapshot["limits"].values():
            for dimension in ("requests", "tokens"):
                held = row.get(dimension)
                if held is not None and held.get(field) is not None:
                    yield {**series_labels(row), "dimension": dimension}, held[field]

    return samples


def _limit_source(snapshot: dict[str, Any]) -> Samples:
    for row in snapshot["limits"].values():
        for dimension in ("requests", "tokens"):
            held = row.get(dimension)
            if held is not None:
                labels = {**series_labels(row), "dimension": dimension, "source": held["source"]}
                yield labels, 1.0


def _transitions(snapshot: dict[str, Any]) -> Samples:
    for change, count in snapshot["breaker_transitions"].items():
        yield {"change": change}, count


def _connections(snapshot: dict[str, Any]) -> Samples:
    connections = snapshot["connections"]
    yield {"kind": "opened"}, connections["opened"]
    yield {"kind": "reused"}, connections["reused"]


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument(
        "calls_total", "calls", "counter", "{call}", "Calls, all attempts together.",
        _per_series("calls"),
    ),
    Instrument(
        "errors_total", "errors", "counter", "{call}", "Failed calls by error type.", _errors
    ),
    Instrument(
        "rate_limited_total", "rate_limited", "counter", "{response}",
        "429 answers, retried or not.", _per_series("rate_limited"),
    ),
    Instrument(
        "retries_total", "retries", "counter", "{retry}", "Retries.", _per_series("retries")
    ),
    Instrument(
        "limiter_wait_seconds_total", "limiter.wait", "counter", "s",
        "Time spent waiting for the rate limiter.", _per_series("limiter_wait_s"),
    ),
    Instrument(
        "latency_seconds", "latency", "quantiles", "s",
        "Latency percentiles of successful calls (label quantile).", _latency,
    ),
    Instrument(
        "in_flight", "in_flight", "gauge", "{call}",
        "Attempts in flight now (the concurrency the endpoint sees).", _per_series("in_flight"),
    ),
    Instrument(
        "max_in_flight", "in_flight.max", "gauge", "{call}",
        "Most attempts in flight at once so far.", _per_series("max_in_flight"),
    ),
    Instrument(
        "limit_per_minute", "limit.per_minute", "gauge", "{unit}/min",
        "The rate the limiter holds per dimension (requests, tokens), after the safety margin: "
        "configured, announced by the server, or learned from its 429s.",
        _limit("per_minute"),
    ),
    Instrument(
        "limit_burst_seconds", "limit.burst", "gauge", "s",
        "Seconds' worth the limiter lets go at once (the enforcement window it found).",
        _limit("burst_s"),
    ),
    Instrument(
        "limit_sending_per_minute", "limit.sending", "gauge", "{unit}/min",
        "The send rate the limiter measured per dimension (learned limits only).",
        _limit("sending_per_minute"),
    ),
    Instrument(
        "limit_source", "limit.source", "gauge", "1",
        "1 for where each dimension's rate comes from (label source: configured, start, "
        "announced, slow_start, cubic).",
        _limit_source,
    ),
    Instrument(
        "breaker_transitions_total", "breaker.transitions", "counter", "{change}",
        "Circuit breaker state changes.", _transitions,
    ),
    Instrument(
        "tcp_connections_total", "tcp.connections", "counter", "{connection}",
        "TCP connections opened and reused.", _connections,
    ),
)  # fmt: skip
