"""Prometheus metrics of the router process (DESIGN §10).

uvicorn runs several worker processes, so prometheus-client runs in multiprocess mode when
``PROMETHEUS_MULTIPROC_DIR`` is set (the supervisor sets it): each worker writes its samples to
files there and ``/metrics`` aggregates them. Labels stay bounded: route templates, not paths;
results, not users.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# `_created` timestamps double the series count and no dashboard reads them.
disable_created_metrics()

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "ticketing_http_requests_total", "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "ticketing_http_request_duration_seconds", "HTTP request latency by route template and method.",
    ["route", "method"], buckets=LATENCY_BUCKETS_S,
)
HTTP_IN_FLIGHT = Gauge(
    "ticketing_http_requests_in_flight", "HTTP requests being served.", multiprocess_mode="livesum",
)
HTTP_REJECTED = Counter(
    "ticketing_http_rejected_total", "Requests refused at the edge, by reason.", ["reason"],
)
COMPONENT_UP = Gauge(
    "ticketing_component_up", "1 when the component answered the last readiness probe.",
    ["component"], multiprocess_mode="liveall",
)


PAYMENT_CALLS = Counter(
    "ticketing_payment_calls_total", "Payment gateway calls by operation and outcome.", ["operation", "outcome"],
)
PAYMENT_LATENCY = Histogram(
    "ticketing_payment_call_duration_seconds", "Payment gateway call latency.", ["operation"],
    buckets=LATENCY_BUCKETS_S,
)


def observe_payment_call(operation: str, outcome: str, duration_s: float) -> None:
    PAYMENT_CALLS.labels(operation, outcome).inc()
    PAYMENT_LATENCY.labels(operation).observe(duration_s)


def render() -> tuple[bytes, str]:
    """The exposition text of every live worker (or of this process when not multiprocess)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
