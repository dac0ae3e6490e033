"""Dashboards and alert rules query only metrics the code declares, and the JSON is up to date."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from actors.shard_metrics import ShardMetrics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
METRIC = re.compile(r"\bticketing_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
ROUTER_MODULES = ("router.http_metrics", "router.edge", "router.shard_client", "router.checkout", "router.orders_api",
                  "router.checkins_api", "router.resolver", "router.ratelimit", "router.browse",
                  "router.seat_stream", "router.waiting_room", "router.snapshots", "router.queue_api")


def declared_metrics() -> set[str]:
    for module in ROUTER_MODULES:
        importlib.import_module(module)
    text = generate_latest(REGISTRY).decode() + ShardMetrics(0).text().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ticketing_")}


def queried_metrics() -> dict[str, set[str]]:
    dashboard = json.loads((DASHBOARDS / "grafana" / "ticketing.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    rules = yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    found: dict[str, set[str]] = {}
    for expr in exprs:
        for name in METRIC.findall(expr):
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix):
                    name = name.removesuffix(suffix)
            found.setdefault(name, set()).add(expr)
    return found


def test_every_queried_metric_is_declared() -> None:
    declared = declared_metrics()
    unknown = {name: exprs for name, exprs in queried_metrics().items() if name not in declared}
    assert unknown == {}


def test_the_dashboard_covers_every_declared_metric() -> None:
    """Observability keeps up with features: a new metric without a panel fails here."""
    queried = set(queried_metrics())
    missing = sorted(name for name in declared_metrics() if name not in queried)
    assert missing == []


def test_dashboard_json_is_generated_from_the_builder() -> None:
    import runpy

    builder = runpy.run_path(str(DASHBOARDS / "build_dashboard.py"))
    expected = builder["build"]()
    assert json.loads((DASHBOARDS / "grafana" / "ticketing.json").read_text()) == expected
