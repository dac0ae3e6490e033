"""The service level objectives of `POST /v1/holds`, the request a flash sale is made of.

dashboards/alerts.yml states them in its header and computes their burn rates; the dashboards draw
the same numbers as thresholds; tests/unit/test_dashboards.py checks that the two agree.
"""

from __future__ import annotations

HOLD_ROUTE = "/v1/holds"
HOLD_METHOD = "POST"
# Availability: this share of holds is answered without a 5xx, over 30 days. A 4xx (sold out, rate
# limited, a bad body) is the service working.
HOLD_AVAILABILITY_OBJECTIVE = 0.999
# Latency: this share of holds is answered within HOLD_LATENCY_THRESHOLD_S, which must be a bucket
# bound of ticketing_http_request_duration_seconds (LATENCY_BUCKETS_S in router/http_metrics.py).
HOLD_LATENCY_OBJECTIVE = 0.99
HOLD_LATENCY_THRESHOLD_S = 0.5
# The SRE Workbook's multiwindow, multi-burn-rate table: (burn rate, long window, short window).
PAGE_BURNS = ((14.4, "1h", "5m"), (6.0, "6h", "30m"))
TICKET_BURNS = ((1.0, "3d", "6h"),)

AVAILABILITY_ERROR_RATIO = "ticketing:hold_availability:error_ratio_rate{window}"
LATENCY_SLOW_RATIO = "ticketing:hold_latency:slow_ratio_rate{window}"


def budget(objective: float) -> float:
    """The share of requests allowed to miss: 0.001 for 99.9 %."""
    return round(1 - objective, 6)
