"""Metrics: what the calls to each (endpoint, model) cost, in plain numbers.

Two feeds. A :class:`ClientPool` records into its ``pool.metrics`` from the inside: every call
its models and embeddings make (latency, retries included), each retry, each 429, the time spent
waiting for the rate limiter, every breaker state change, and TCP connections opened vs reused.
For chains the pool did not build, :class:`MetricsCallbackHandler` records LLM calls from
LangChain's callbacks (``config={"callbacks": [metrics.handler()]}``).

``metrics.snapshot()`` returns plain data (dicts, numbers, strings) for logs, a dashboard or a
test; percentiles are nearest-rank over the last ``max_samples`` latencies of each series.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import openai
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from rat_langchain.metrics.prometheus import render

__all__ = ["ConnectionCounter", "Metrics", "MetricsCallbackHandler"]

if TYPE_CHECKING:
    from rat_langchain.guards.breaker import StateChange

# (endpoint, model[, tenant]): a guards.Key is one. Series drop the tenant (one series per
# endpoint and model, however many API keys call it); the limits keep it (each tenant's quota).
SeriesKey = tuple[str, ...]
OTHER = "(other)"  # the model of the series that collects what comes past ``max_series``
_log = logging.getLogger("rat_langchain.metrics")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class ConnectionCounter:
    """TCP connections a transport opened and requests it sent over an existing one."""

    opened: int = 0
    reused: int = 0

    @property
    def reuse(self) -> float | None:
        """Share of requests that found an open connection; None before any request."""
        total = self.opened + self.reused
        return self.reused / total if total else None


@dataclass
class _Series:
    max_samples: int
    calls: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    retries: int = 0
    limiter_waits: int = 0
    limiter_wait_s: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    first: float | None = None
    last: float | None = None
    latencies: deque[float] = field(init=False)

    def __post_init__(self) -> None:
        self.latencies = deque(maxlen=self.max_samples)

    def snapshot(self) -> dict[str, Any]:
        ms = [x * 1000 for x in self.latencies]
        span = (self.last - self.first) if self.first is not None and self.last else 0.0
        return {
            "calls": self.calls,
            "ok": self.ok,
            "errors": dict(self.errors),
            "error_count": sum(self.errors.values()),
            "rate_limited": self.rate_limited,
            "retries": self.retries,
            "limiter_waits": self.limiter_waits,
            "limiter_wait_s": round(self.limiter_wait_s, 6),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "throughput_per_s": self.calls / span if span > 0 else None,
            "latency_ms": {
                "p50": percentile(ms, 50),
                "p95": percentile(ms, 95),
                "p99": percentile(ms, 99),
                "max": max(ms, default=0.0),
                "samples": len(ms),
            },
        }


class Metrics:
    """Per (endpoint, model) counters and latency percentiles; thread-safe.

    Example::

        metrics = Metrics()
        chain.invoke(x, config={"callbacks": [metrics.handler()]})
        metrics.snapshot()["series"]["https://api.openai.com/v1 gpt-4o-mini"]["latency_ms"]["p95"]
    """

    def __init__(
        self,
        *,
        max_samples: int = 10_000,
        max_series: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        if max_series < 1:
            raise ValueError(f"max_series must be >= 1, got {max_series}")
        self.max_samples = max_samples
        # model names can be user input: without a cap, each new one is a series for ever (the
        # memory and the Prometheus page grow without bound); past it, calls count under OTHER
        self.max_series = max_series
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[SeriesKey, _Series] = {}
        self.breaker_transitions: Counter[str] = Counter()
        self.breaker_states: dict[str, str] = {}
        self.connections = ConnectionCounter()
        self._limits: Callable[[], Mapping[Any, dict[str, Any]]] | None = None

    def __repr__(self) -> str:
        return f"Metrics(series={len(self._series)})"

    def _get(self, key: SeriesKey) -> _Series:
        name = (key[0], key[1])
        series = self._series.get(name)
        if series is None:
            if len(self._series) >= self.max_series:
                name = (key[0], OTHER)
                series = self._series.get(name)
                if series is None:
                    _log.warning(
                        "metrics: %d series (max_series); calls to further models of %s are "
                        "counted under model %r",
                        self.max_series,
                        key[0] or "unnamed endpoints",
                        OTHER,
                    )
            if series is None:
                series = self._series[name] = _Series(self.max_samples)
        return series

    # -- recording -----------------------------------------------------------------------------

    def record_call(
        self,
        key: SeriesKey,
        latency_s: float,
        error: BaseException | None = None,
        *,
        started: float | None = None,
    ) -> None:
        """One call (all its attempts), ended now after ``latency_s``."""
        now = self._clock()
        with self._lock:
            series = self._get(key)
            series.calls += 1
            begin = started if started is not None else now - latency_s
            series.first = begin if series.first is None else min(series.first, begin)
            series.last = now if series.last is None else max(series.last, now)
            if error is None:
                series.ok += 1
                series.latencies.append(latency_s)
            else:
                series.errors[type(error).__name__] += 1

    def record_retry(self, key: SeriesKey) -> None:
        with self._lock:
            self._get(key).retries += 1

    def record_rate_limited(self, key: SeriesKey) -> None:
        """A 429 answer (the call may still succeed on a retry)."""
        with self._lock:
            self._get(key).rate_limited += 1

    def record_limiter_wait(self, key: SeriesKey, seconds: float) -> None:
        with self._lock:
            series = self._get(key)
            series.limiter_waits += 1
            series.limiter_wait_s += seconds

    def record_in_flight(self, key: SeriesKey, delta: int) -> None:
        """An attempt went out (+1) or came back (-1): the concurrency the endpoint sees."""
        with self._lock:
            series = self._get(key)
            series.in_flight += delta
            series.max_in_flight = max(series.max_in_flight, series.in_flight)

    def watch_limits(self, read: Callable[[], Mapping[Any, dict[str, Any]]]) -> None:
        """Report what a rate limiter holds per (endpoint, model) (``RateLimiter.limits``):
        limits learned from the server, burst window, send rate. Read at each snapshot."""
        self._limits = read

    def record_breaker(self, change: StateChange) -> None:
        """A breaker listener: ``breaker.add_listener(metrics.record_breaker)``."""
        with self._lock:
            self.breaker_transitions[f"{change.name}: {change.old.value}->{change.new.value}"] += 1
            self.breaker_states[change.name] = change.new.value

    # -- reading -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Plain data: one entry per ``"endpoint model"`` series (each row also holds its
        ``endpoint`` and ``model``: names may contain spaces), limits, breakers, connections."""
        read = self._limits
        limits = {}
        for key, row in (read() if read else {}).items():
            endpoint, model, tenant = (*key, "")[:3]
            name = f"{endpoint} {model}".strip() + (f" #{tenant}" if tenant else "")
            limits[name] = {**row, "endpoint": endpoint, "model": model, "tenant": tenant}
        with self._lock:
            series = {
                f"{e} {m}".strip(): {**s.snapshot(), "endpoint": e, "model": m}
                for (e, m), s in self._series.items()
            }
            return {
                "series": series,
                "limits": limits,
                "breaker_transitions": dict(self.breaker_transitions),
                "breaker_states": dict(self.breaker_states),
                "connections": {
                    "opened": self.connections.opened,
                    "reused": self.connections.reused,
                    "reuse": self.connections.reuse,
                },
            }

    def to_prometheus(self, prefix: str = "rat") -> str:
        """The snapshot in Prometheus' text exposition format (serve it on ``/metrics`` with
        any web framework; no client library needed)."""
        return render(self.snapshot(), prefix)

    def to_otel(self, meter: Any = None, *, prefix: str = "rat") -> list[Any]:
        """Publish these metrics through OpenTelemetry (the ``otel`` extra); see
        :func:`rat_langchain.metrics.otel.instrument`."""
        from rat_langchain.metrics.otel import instrument

        return instrument(self, meter, prefix=prefix)

    def series(self, endpoint: str, model: str) -> dict[str, Any]:
        with self._lock:
            return self._get((endpoint, model)).snapshot()

    def reset(self) -> None:
        with self._lock:
            self._series.clear()
            self.breaker_transitions.clear()
            self.connections.opened = self.connections.reused = 0

    def handler(self) -> MetricsCallbackHandler:
        return MetricsCallbackHandler(self)


class MetricsCallbackHandler(BaseCallbackHandler):
    """Feeds :class:`Metrics` from LangChain callbacks: every chat model / LLM call of any
    chain it is attached to, with its latency and, on failure, the error's type. Runs inline
    (it only takes a lock and appends), in sync and async runs alike."""

    run_inline = True

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._started: dict[uuid.UUID, tuple[SeriesKey, float]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MetricsCallbackHandler(in_flight={len(self._started)})"

    def _start(self, serialized: dict[str, Any] | None, run_id: uuid.UUID, kw: Any) -> None:
        params = kw.get("invocation_params") or {}
        model = params.get("model") or params.get("model_name") or "unknown"
        ser_kwargs = (serialized or {}).get("kwargs") or {}
        endpoint = params.get("base_url") or ser_kwargs.get("openai_api_base") or ""
        with self._lock:
            self._started[run_id] = ((str(endpoint), str(model)), time.monotonic())

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[Any]], *, run_id: uuid.UUID, **kw: Any
    ) -> None:
        self._start(serialized, run_id, kw)

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: uuid.UUID, **kw: Any
    ) -> None:
        self._start(serialized, run_id, kw)

    def _end(self, run_id: uuid.UUID, error: BaseException | None) -> None:
        with self._lock:
            found = self._started.pop(run_id, None)
        if found is not None:
            key, started = found
            self.metrics.record_call(key, time.monotonic() - started, error)
            if isinstance(error, openai.RateLimitError) or "RateLimitError" in type(error).__name__:
                self.metrics.record_rate_limited(key)

    def on_llm_end(self, response: LLMResult, *, run_id: uuid.UUID, **kw: Any) -> None:
        self._end(run_id, None)

    def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kw: Any) -> None:
        self._end(run_id, error)
