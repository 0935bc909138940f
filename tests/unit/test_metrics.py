"""Metrics: percentiles on a known distribution, counters, breaker transitions, snapshots."""

from __future__ import annotations

import random

import openai
import pytest

from rat_langchain import CircuitBreaker, Metrics
from rat_langchain.guards.breaker import Outcome

KEY = ("http://sim/v1", "gpt-4o-mini")


def test_percentiles_are_right_on_a_known_distribution() -> None:
    metrics = Metrics()
    latencies = [i / 1000 for i in range(1, 1001)]  # 1..1000 ms, shuffled
    random.Random(3).shuffle(latencies)
    for latency in latencies:
        metrics.record_call(KEY, latency)
    series = metrics.series(*KEY)
    assert series["latency_ms"]["p50"] == pytest.approx(500)
    assert series["latency_ms"]["p95"] == pytest.approx(950)
    assert series["latency_ms"]["p99"] == pytest.approx(990)
    assert series["latency_ms"]["max"] == pytest.approx(1000)
    assert series["calls"] == series["ok"] == 1000


def test_errors_retries_waits_throughput_and_bounded_samples() -> None:
    now = [0.0]
    metrics = Metrics(max_samples=10, clock=lambda: now[0])
    for i in range(20):
        now[0] = i + 1.0
        metrics.record_call(KEY, 1.0)  # one call a second, each lasting 1 s
    now[0] = 21.0
    metrics.record_call(KEY, 0.5, TimeoutError("slow"))
    metrics.record_retry(KEY)
    metrics.record_rate_limited(KEY)
    metrics.record_limiter_wait(KEY, 0.25)
    metrics.record_limiter_wait(KEY, 0.5)
    series = metrics.snapshot()["series"]["http://sim/v1 gpt-4o-mini"]
    assert series["errors"] == {"TimeoutError": 1}
    assert series["error_count"] == 1
    assert series["retries"] == 1
    assert series["rate_limited"] == 1
    assert series["limiter_waits"] == 2
    assert series["limiter_wait_s"] == pytest.approx(0.75)
    assert series["latency_ms"]["samples"] == 10  # only the last max_samples are kept
    assert series["throughput_per_s"] == pytest.approx(21 / 21)  # 21 calls from t=0 to t=21
    metrics.reset()
    assert metrics.snapshot()["series"] == {}


def test_breaker_transitions_are_counted() -> None:
    metrics = Metrics()
    breaker = CircuitBreaker("sim/m", consecutive_failures=1, minimum_calls=5)
    breaker.add_listener(metrics.record_breaker)
    breaker.acquire().record(Outcome.FAILURE)
    snapshot = metrics.snapshot()
    assert snapshot["breaker_transitions"] == {"sim/m: closed->open": 1}
    assert snapshot["breaker_states"] == {"sim/m": "open"}


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_samples"):
        Metrics(max_samples=0)
    assert openai.RateLimitError  # the handler recognises it by type


def test_prometheus_text_exposition() -> None:
    metrics = Metrics()
    for ms in (10, 20, 30):
        metrics.record_call(KEY, ms / 1000)
    metrics.record_call(KEY, 0.5, TimeoutError())
    metrics.record_retry(KEY)
    text = metrics.to_prometheus()
    labels = 'endpoint="http://sim/v1",model="gpt-4o-mini"'
    assert f"rat_calls_total{{{labels}}} 4" in text
    assert f'rat_errors_total{{{labels},type="TimeoutError"}} 1' in text
    assert f'rat_latency_seconds{{{labels},quantile="0.5"}} 0.02' in text
    assert "# TYPE rat_retries_total counter" in text
    assert text.endswith("\n")


def test_opentelemetry_export_reads_the_same_figures() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from rat_langchain.metrics.otel import instrument

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = Metrics()
    instrument(metrics, provider.get_meter("test"), snapshot_max_age_s=0)
    for ms in (10, 20, 30):
        metrics.record_call(KEY, ms / 1000)
    metrics.record_call(KEY, 0.5, TimeoutError())
    metrics.record_retry(KEY)
    breaker = CircuitBreaker("sim/m", consecutive_failures=1, minimum_calls=5)
    breaker.add_listener(metrics.record_breaker)
    breaker.acquire().record(Outcome.FAILURE)

    def points() -> dict[str, list[tuple[dict[str, object], float]]]:
        data = reader.get_metrics_data()
        assert data is not None
        found: dict[str, list[tuple[dict[str, object], float]]] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = [
                        (dict(p.attributes or {}), p.value)  # type: ignore[union-attr]
                        for p in metric.data.data_points
                    ]
        return found

    series = {"endpoint": "http://sim/v1", "model": "gpt-4o-mini"}
    first = points()
    assert first["rat.calls"] == [(series, 4)]
    assert first["rat.errors"] == [({**series, "error.type": "TimeoutError"}, 1)]
    assert first["rat.retries"] == [(series, 1)]
    assert ({**series, "quantile": "0.5"}, pytest.approx(0.02)) in first["rat.latency"]
    assert first["rat.breaker.transitions"] == [({"change": "sim/m: closed->open"}, 1)]
    metrics.record_call(KEY, 0.04)
    assert points()["rat.calls"] == [(series, 5)]  # cumulative, read afresh at each collection


def test_series_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    """Model names can be user input: 3000 of them were 3000 series for ever (29 MB, a 5.4 MB
    Prometheus page). Past ``max_series`` they count under ``(other)``, with one warning."""
    metrics = Metrics(max_series=10)
    with caplog.at_level("WARNING", logger="rat_langchain.metrics"):
        for n in range(3000):
            metrics.record_call(("http://sim/v1", f"model-{n}"), 0.01)
    series = metrics.snapshot()["series"]
    assert len(series) == 11
    assert series["http://sim/v1 (other)"]["calls"] == 2990
    assert sum(row["calls"] for row in series.values()) == 3000  # nothing dropped
    assert len([r for r in caplog.records if "max_series" in r.getMessage()]) == 1
    with pytest.raises(ValueError, match="max_series"):
        Metrics(max_series=0)


def test_a_model_name_with_a_space_is_labelled_whole() -> None:
    metrics = Metrics()
    metrics.record_call(("http://sim/v1", "my model v2"), 0.01)
    metrics.record_call(("http://sim/v1", "m", "a1b2c3"), 0.01)  # a tenant: same series as "m"
    text = metrics.to_prometheus()
    assert 'rat_calls_total{endpoint="http://sim/v1",model="my model v2"} 1' in text
    assert 'rat_calls_total{endpoint="http://sim/v1",model="m"} 1' in text
