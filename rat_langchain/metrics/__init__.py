"""Metrics: one table of instruments, read by the Prometheus and OpenTelemetry exporters."""

from rat_langchain.metrics.collector import ConnectionCounter, Metrics, MetricsCallbackHandler

__all__ = ["ConnectionCounter", "Metrics", "MetricsCallbackHandler"]
