"""Generates dashboards/grafana/ticketing.json (run: python dashboards/build_dashboard.py).

The dashboard is data; this script keeps its panels uniform (one helper per panel kind) and is the
place to add a panel when a new path gets metrics. tests/integration/test_dashboards.py checks
that every metric the dashboard and the alert rules query is exported by a running cluster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("grafana") / "ticketing.json"
WIDTH = 12
HEIGHT = 8


def panel(title: str, exprs: list[tuple[str, str]], unit: str = "short", kind: str = "timeseries") -> dict[str, Any]:
    return {
        "type": kind, "title": title, "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"expr": expr, "legendFormat": legend, "refId": chr(ord("A") + index)}
                    for index, (expr, legend) in enumerate(exprs)],
    }


def rate(metric: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}[1m]))"


def quantile(q: float, metric: str, by: str = "le") -> str:
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket[1m])))"


def mean(metric: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}_sum[1m])) / sum by ({by}) (rate({metric}_count[1m]))"


ROWS: list[tuple[str, list[dict[str, Any]]]] = [
    ("Buyers: traffic and answers", [
        panel("Requests/s by route and status", [(rate("ticketing_http_requests_total", "route, status"),
                                                  "{{route}} {{status}}")], "reqps"),
        panel("Latency p50 / p99 by route", [
            (quantile(0.5, "ticketing_http_request_duration_seconds", "le, route"), "p50 {{route}}"),
            (quantile(0.99, "ticketing_http_request_duration_seconds", "le, route"), "p99 {{route}}")], "s"),
        panel("Refused at the edge, rate limited, in flight", [
            (rate("ticketing_http_rejected_total", "reason"), "edge {{reason}}"),
            (rate("ticketing_rate_limited_total", "scope"), "rate limited"),
            ("sum(ticketing_http_requests_in_flight)", "in flight")]),
        panel("Readiness by component", [("min by (component) (ticketing_component_up)", "{{component}}")],
              kind="state-timeline"),
        panel("Rate limiter: checks per Redis call, checks failed open", [
            ("sum(rate(ticketing_rate_limit_batch_size_sum[1m]))"
             " / sum(rate(ticketing_rate_limit_batch_size_count[1m]))", "checks per call (mean)"),
            (quantile(0.99, "ticketing_rate_limit_batch_size"), "checks per call p99"),
            (rate("ticketing_rate_limit_fail_open_total", "reason"), "failed open {{reason}}/s")]),
    ]),
    ("Inventory: holds, conflicts, tickets", [
        panel("Holds by result", [(rate("ticketing_holds_total", "result"), "{{result}}")], "ops"),
        panel("Active holds by shard", [("sum by (shard) (ticketing_active_holds)", "shard {{shard}}")]),
        panel("Conflicts by reason", [(rate("ticketing_conflicts_total", "reason"), "{{reason}}")], "ops"),
        panel("Tickets issued and check-ins", [
            (rate("ticketing_tickets_issued_total", "shard"), "issued shard {{shard}}"),
            (rate("ticketing_checkins_total", "result"), "check-in {{result}} (actor)"),
            (rate("ticketing_http_checkins_total", "result"), "check-in {{result}} (router)")], "ops"),
    ]),
    ("Public reads", [
        panel("Availability and seat-map reads by source", [
            (rate("ticketing_read_snapshots_total", "source"), "{{source}}")], "ops"),
        panel("Snapshot hit ratio", [
            ('sum(rate(ticketing_read_snapshots_total{source!="shard"}[1m]))'
             " / sum(rate(ticketing_read_snapshots_total[1m]))", "answered without the shard")], "percentunit"),
    ]),
    ("Waiting room", [
        panel("Joins and polls by answer", [(rate("ticketing_queue_steps_total", "kind, status"),
                                             "{{kind}} {{status}}"),
                                            ("sum(rate(ticketing_queue_sold_out_answers_total[1m]))",
                                             "told sold out")], "ops"),
        panel("Line length seen by joins and polls", [
            (quantile(0.5, "ticketing_queue_line_length"), "p50"),
            (quantile(0.99, "ticketing_queue_line_length"), "p99")]),
        panel("Admitted, dropped for not polling, admissions used", [
            ("sum(rate(ticketing_queue_admitted_total[1m]))", "admitted/s"),
            ("sum(rate(ticketing_queue_dropped_total[1m]))", "dropped/s"),
            (rate("ticketing_queue_admissions_used_total", "result"), "used for a hold {{result}}/s"),
            ("sum(increase(ticketing_queue_shuffled_total[1m]))", "early joiners shuffled at an opening")], "ops"),
    ]),
    ("Checkout and payments", [
        panel("Checkouts by result", [(rate("ticketing_checkouts_total", "result"), "{{result}}")], "ops"),
        panel("Gateway calls by outcome", [(rate("ticketing_payment_calls_total", "operation, outcome"),
                                            "{{operation}} {{outcome}}")], "ops"),
        panel("Gateway latency p99", [(quantile(0.99, "ticketing_payment_call_duration_seconds",
                                                "le, operation"), "{{operation}}")], "s"),
        panel("Resolver decisions, refunds, transfers", [
            (rate("ticketing_checkout_resolutions_total", "result"), "resolver {{result}}"),
            (rate("ticketing_checkout_unsettled_total", "kind, reason"), "unsettled {{kind}} {{reason}}"),
            (rate("ticketing_refunds_total", "result"), "refund {{result}}"),
            (rate("ticketing_transfers_total", "result"), "transfer {{result}}")], "ops"),
    ]),
    ("Shards: batching, commits, recovery", [
        panel("Batch sizes (mean): router → actor call, actor apply, calls per commit", [
            (mean("ticketing_shard_batch_size", "shard, kind"), "router {{shard}} {{kind}}"),
            (mean("ticketing_actor_apply_batch_size", "shard"), "apply {{shard}}"),
            (mean("ticketing_actor_commit_calls", "shard"), "calls/commit {{shard}}")]),
        panel("Actor call p99 (router side) and apply time p99", [
            (quantile(0.99, "ticketing_shard_call_duration_seconds", "le, shard, kind"), "call {{shard}} {{kind}}"),
            (quantile(0.99, "ticketing_actor_apply_seconds", "le, shard"), "apply {{shard}}")], "s"),
        panel("Commands per committed transaction (mean)", [(mean("ticketing_actor_commit_commands", "shard"),
                                                             "shard {{shard}}")]),
        panel("Commit time p50 / p99", [
            (quantile(0.5, "ticketing_actor_commit_seconds", "le, shard"), "p50 shard {{shard}}"),
            (quantile(0.99, "ticketing_actor_commit_seconds", "le, shard"), "p99 shard {{shard}}")], "s"),
        panel("Shard queue depth and refusals", [
            ("sum by (shard, kind) (ticketing_shard_queue_depth)", "depth {{shard}} {{kind}}"),
            (rate("ticketing_shard_rejected_total", "shard, reason"), "refused {{shard}} {{reason}}"),
            (rate("ticketing_shard_retries_total", "shard"), "retried {{shard}}")]),
        panel("Commits/s, failures and recoveries", [
            (rate("ticketing_actor_commits_total", "shard"), "commits {{shard}}"),
            (rate("ticketing_actor_commit_failures_total", "shard, reason"), "failure {{shard}} {{reason}}"),
            ("sum by (shard) (increase(ticketing_actor_recoveries_total[5m]))", "recoveries {{shard}}")]),
        panel("Poison isolation: runs and refused commands", [
            ("sum by (shard, trigger) (increase(ticketing_actor_isolations_total[5m]))", "runs {{shard}} {{trigger}}"),
            ("sum by (shard) (increase(ticketing_actor_isolated_commands_total[5m]))", "refused {{shard}}"),
            ("sum by (shard) (ticketing_actor_events_quarantined)", "events quarantined {{shard}}")]),
        panel("Last recovery time, lease epoch, events owned, compiled core", [
            ("sum by (shard) (ticketing_actor_events)", "events {{shard}}"),
            ("max by (shard) (ticketing_actor_recovery_seconds)", "recovery s {{shard}}"),
            ("max by (shard) (ticketing_actor_epoch)", "epoch {{shard}}"),
            ("min by (shard) (ticketing_actor_core_compiled)", "compiled core {{shard}}")]),
        panel("Durable lookups: reads and idempotency keys answered from Postgres, keys purged", [
            (rate("ticketing_actor_durable_reads_total", "kind, result"), "read {{kind}} {{result}}"),
            (rate("ticketing_actor_idempotency_lookups_total", "result"), "key {{result}}"),
            (rate("ticketing_actor_idempotency_keys_purged_total", "shard"), "purged {{shard}}")], "ops"),
    ]),
    ("Browse and live seat maps", [
        panel("Event listing latency p99 and shard failures", [
            (quantile(0.99, "ticketing_events_list_duration_seconds", "le"), "p99"),
            (rate("ticketing_events_list_shard_failures_total", "shard, reason"), "failed {{shard}}")]),
        panel("Seat-map streams", [
            ("sum(ticketing_seat_streams_open)", "open"),
            (rate("ticketing_seat_stream_events_total", "kind"), "events {{kind}}/s"),
            (rate("ticketing_seat_streams_rejected_total", "reason"), "refused {{reason}}"),
            (rate("ticketing_seat_stream_poll_failures_total", "shard"), "poll failures {{shard}}")]),
    ]),
]


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for row_title, row_panels in ROWS:
        panels.append({"type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        y += 1
        for index, item in enumerate(row_panels):
            item["gridPos"] = {"h": HEIGHT, "w": WIDTH, "x": (index % 2) * WIDTH, "y": y + (index // 2) * HEIGHT}
        y += ((len(row_panels) + 1) // 2) * HEIGHT
        panels.extend(row_panels)
    for number, item in enumerate(panels, start=1):
        item["id"] = number
    return {
        "title": "Ticketing cluster", "uid": "ticketing-overview", "schemaVersion": 39, "version": 1,
        "time": {"from": "now-30m", "to": "now"}, "refresh": "10s", "tags": ["ticketing"],
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {OUT}")
