"""Prometheus metrics of the router process (DESIGN §10).

uvicorn runs several worker processes, so prometheus-client runs in multiprocess mode when
``PROMETHEUS_MULTIPROC_DIR`` is set (the supervisor sets it): each worker writes its samples to
files there and ``/metrics`` aggregates them. Labels stay bounded: route templates, not paths;
results, not users.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from typing import Any, TypeVar

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

Metric = TypeVar("Metric", Counter, Gauge, Histogram)


def at_zero(metric: Metric, *label_values: str | tuple[str, ...]) -> Metric:
    """`metric`, with the series of each known label value (a tuple where it has several labels)
    created at 0.

    A labelled metric has no series until its first increment: a failure that never happened
    shows as "no data" on a dashboard, indistinguishable from a broken scrape, and its first
    occurrence is no increase to `rate()` either (Prometheus' instrumentation guide: initialize the
    label values you know of). The callers keep the lists of values next to their metrics."""
    for values in label_values:
        metric.labels(*((values,) if isinstance(values, str) else values))
    return metric


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
# Why the edge refuses a request before a handler runs (router/edge.py).
EDGE_REJECTIONS = ("body_too_large", "deadline")
HTTP_REJECTED = at_zero(Counter(
    "ticketing_http_rejected_total", "Requests refused at the edge, by reason.", ["reason"],
), *EDGE_REJECTIONS)
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


class RequestTally:
    """This worker's request counts, latencies and in-flight gauge, kept in plain numbers and
    applied to the Prometheus series at most `interval_s` after they change.

    In multiprocess mode every `inc`/`observe`/`set` takes a lock, calls getpid() and writes an
    mmap'd file; per request that was five such writes (in-flight up and down, the counter, the
    histogram's sum and bucket), measurable on the hot path. Here a request costs a few dict and
    list updates; a timer, armed only while something is unapplied, writes the sums. Scrapes see
    the numbers at most `interval_s` late (Prometheus scrapes every 5-15 s).
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.in_flight = 0
        # (route, method, status) → [count, latency sum, count per latency bucket (+Inf last)]
        self._pending: dict[tuple[str, str, int], list[Any]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def started(self) -> None:
        self.in_flight += 1
        self._arm()

    def finished(self, route: str, method: str, status: int, elapsed_s: float) -> None:
        self.in_flight -= 1
        entry = self._pending.get((route, method, status))
        if entry is None:
            entry = self._pending[(route, method, status)] = [0, 0.0, [0] * (len(LATENCY_BUCKETS_S) + 1)]
        entry[0] += 1
        entry[1] += elapsed_s
        entry[2][bisect_left(LATENCY_BUCKETS_S, elapsed_s)] += 1  # the first bucket with le >= elapsed
        self._arm()

    def _arm(self) -> None:
        if self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.interval_s, self.flush)
            except RuntimeError:  # no loop (a synchronous caller): apply now
                self.flush()

    def flush(self) -> None:
        self._timer = None
        pending, self._pending = self._pending, {}
        for (route, method, status), (count, total_s, buckets) in pending.items():
            HTTP_REQUESTS.labels(route, method, str(status)).inc(count)
            histogram = HTTP_LATENCY.labels(route, method)
            # Histogram.observe one value at a time would be `count` writes; these are its own
            # two series (prometheus-client's `_sum` and `_buckets`, checked by tests/unit/test_edge.py).
            histogram._sum.inc(total_s)
            for index, bucket_count in enumerate(buckets):
                if bucket_count:
                    histogram._buckets[index].inc(bucket_count)
        HTTP_IN_FLIGHT.set(self.in_flight)


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
