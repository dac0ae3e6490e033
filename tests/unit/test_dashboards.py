"""Dashboards and rules query only metrics the code declares, show every metric it declares, and keep
the dashboard rules: one unit per panel, a description on every panel, no fixed range windows, the
variables a query uses defined on its dashboard; the JSON is what the builder generates, and the
dashboards' SLO lines are the numbers the alert rules use.

Each rule is a function returning what breaks it, tested on the real dashboards (nothing) and, as a
negative control, on a panel made to break it (something): a check that accepts anything proves
nothing.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

import router
from actors.shard_metrics import ShardMetrics
from dashboards import slo
from dashboards.build_dashboard import GRAFANA, build_all, panels_of, queries_of
from router.http_metrics import LATENCY_BUCKETS_S

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
METRIC = re.compile(r"\bticketing_[a-z0-9_]+")
RECORDED = re.compile(r"\bticketing:[a-z0-9_:]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
LABEL_VALUE = re.compile(r'"[^"]*"')
FIXED_WINDOW = re.compile(r"\[\s*\d+(ms|[smhdwy])")
VARIABLE_USE = re.compile(r"\$(?!__)(\w+)|\$\{(?!__)(\w+)\}")
PER_SECOND_UNITS = ("reqps", "ops")


def declared_metrics() -> set[str]:
    """Every metric the router's modules (all of them: a new module's metrics count at once) and a
    shard actor's registry declare."""
    for module in pkgutil.walk_packages(router.__path__, "router."):
        importlib.import_module(module.name)
    text = generate_latest(REGISTRY).decode() + ShardMetrics(0).text().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ticketing_")}


def dashboard_files() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(GRAFANA.glob("*.json"))}


def rule_files() -> dict[str, dict[str, Any]]:
    """Every Prometheus rule file in dashboards/ (a YAML file with `groups`)."""
    files = {path.name: yaml.safe_load(path.read_text()) for path in sorted(DASHBOARDS.glob("*.yml"))}
    return {name: content for name, content in files.items() if isinstance(content, dict) and "groups" in content}


def rules() -> list[dict[str, Any]]:
    return [rule for content in rule_files().values() for group in content["groups"] for rule in group["rules"]]


def all_queries() -> list[str]:
    """Every query of every dashboard file (panels, annotations, variables) and every rule."""
    exprs = []
    for model in dashboard_files().values():
        exprs += list(queries_of(model))
        exprs += [variable["definition"] for variable in model["templating"]["list"] if "definition" in variable]
    return exprs + [rule["expr"] for rule in rules()]


def queried_metrics() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for expr in all_queries():
        for name in METRIC.findall(expr):
            for suffix in HISTOGRAM_SUFFIXES:
                name = name.removesuffix(suffix)
            found.setdefault(name, set()).add(expr)
    return found


# --- the rules, as functions returning what breaks them ----------------------------------------------


def unit_problems(panel: dict[str, Any]) -> list[str]:
    """One unit per panel: declared once, not overridden per series, and the queries are of that kind —
    per-second units only rates, seconds only `_seconds` series, ratios only divisions, counts no
    bare rate and no seconds."""
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    if not unit:
        return ["no unit"]
    problems = [f"an override sets the unit of {override['matcher']}" for override in panel["fieldConfig"]["overrides"]
                if any(item.get("id") == "unit" for item in override.get("properties", []))]
    for target in panel.get("targets", []):
        expr = target["expr"]
        shape = LABEL_VALUE.sub('""', expr)  # a route's slashes are not divisions
        divides = "/" in shape
        rate_of_counter = "rate(" in shape and not divides and "histogram_quantile(" not in shape
        seconds = "_seconds" in shape.replace("_seconds_count", "")
        if unit in PER_SECOND_UNITS and not rate_of_counter:
            problems.append(f"{unit} but not a rate: {expr}")
        elif unit == "s" and not seconds:
            problems.append(f"seconds but no _seconds series: {expr}")
        elif unit == "percentunit" and not divides:
            problems.append(f"a ratio unit but no division: {expr}")
        elif unit not in (*PER_SECOND_UNITS, "s", "percentunit") and (rate_of_counter or seconds):
            problems.append(f"{unit} mixed with a rate or seconds: {expr}")
    return problems


def window_problems(expr: str) -> list[str]:
    """Dashboards use $__rate_interval or $__range, never a fixed window like [1m]."""
    return [f"fixed window in {expr}"] if FIXED_WINDOW.search(expr) else []


def variable_problems(model: dict[str, Any]) -> list[str]:
    defined = {variable["name"] for variable in model["templating"]["list"]}
    used = set()
    for item in panels_of(model):
        for target in item.get("targets", []):
            used |= {a or b for a, b in VARIABLE_USE.findall(target["expr"])}
        if "datasource" in item:
            used |= {a or b for a, b in VARIABLE_USE.findall(json.dumps(item["datasource"]))}
    return [f"${name} is used but not defined" for name in sorted(used - defined)]


def content_panels() -> list[tuple[str, dict[str, Any]]]:
    return [(name, item) for name, model in dashboard_files().items() for item in panels_of(model)
            if item["type"] != "row"]


# --- the tests -----------------------------------------------------------------------------------------


def test_every_queried_metric_is_declared() -> None:
    declared = declared_metrics()
    unknown = {name: exprs for name, exprs in queried_metrics().items() if name not in declared}
    assert unknown == {}


def test_every_declared_metric_is_on_a_dashboard_or_in_a_rule() -> None:
    """Observability keeps up with features: a new metric without a panel or a rule fails here."""
    queried = set(queried_metrics())
    missing = sorted(name for name in declared_metrics() if name not in queried)
    assert missing == []


def test_the_dashboard_json_is_generated_from_the_builder() -> None:
    """Every file in dashboards/grafana is the builder's, and up to date: run
    `python dashboards/build_dashboard.py` after editing the builder."""
    assert dashboard_files() == build_all()


def test_there_are_dashboards_and_rule_files_to_check() -> None:
    """The checks below would pass on nothing: make sure they look at something."""
    assert set(dashboard_files()) == {"onsale", "shards", "http"}
    assert len(content_panels()) > 60
    assert "alerts.yml" in rule_files() and len(rules()) > 20


def test_every_panel_has_one_unit() -> None:
    problems = {f"{name}: {item['title']}": unit_problems(item) for name, item in content_panels()}
    assert {title: found for title, found in problems.items() if found} == {}


def test_the_unit_check_catches_mixed_units() -> None:
    """Negative control: the old dashboard's 'Refused at the edge, rate limited, in flight' (a gauge
    among rates) and a latency quantile on a count panel."""
    mixed = {"fieldConfig": {"defaults": {"unit": "reqps"}, "overrides": []}, "targets": [
        {"expr": "sum(rate(ticketing_http_rejected_total[$__rate_interval]))"},
        {"expr": "sum(ticketing_http_requests_in_flight)"}]}
    assert len(unit_problems(mixed)) == 1
    seconds_as_count = {"fieldConfig": {"defaults": {"unit": "short"}, "overrides": []}, "targets": [
        {"expr": "histogram_quantile(0.99, sum by (le) (rate(ticketing_actor_commit_seconds_bucket[5m])))"}]}
    assert unit_problems(seconds_as_count)
    overridden = {"fieldConfig": {"defaults": {"unit": "s"}, "overrides": [
        {"matcher": {"id": "byName", "options": "depth"}, "properties": [{"id": "unit", "value": "short"}]}]},
        "targets": []}
    assert unit_problems(overridden)
    not_a_ratio = {"fieldConfig": {"defaults": {"unit": "percentunit"}, "overrides": []}, "targets": [
        {"expr": 'sum(rate(ticketing_http_requests_total{route="/v1/holds"}[$__rate_interval]))'}]}
    assert unit_problems(not_a_ratio)
    assert unit_problems({"targets": []}) == ["no unit"]


def test_every_panel_has_a_description() -> None:
    undescribed = [f"{name}: {item['title']}" for name, item in content_panels()
                   if len(item.get("description", "").strip()) < 20]
    assert undescribed == []


def test_no_fixed_windows_in_dashboards() -> None:
    problems = [problem for model in dashboard_files().values() for expr in queries_of(model)
                for problem in window_problems(expr)]
    assert problems == []


def test_the_window_check_catches_a_fixed_window() -> None:
    assert window_problems("sum(rate(ticketing_holds_total[1m]))")
    assert window_problems("sum(increase(ticketing_holds_total[ 5m ]))")
    assert not window_problems("sum(rate(ticketing_holds_total[$__rate_interval]))")
    assert not window_problems("sum(increase(ticketing_holds_total[$__range]))")


def test_every_variable_a_dashboard_uses_is_defined_on_it() -> None:
    problems = {name: variable_problems(model) for name, model in dashboard_files().items()}
    assert {name: found for name, found in problems.items() if found} == {}
    for name, model in dashboard_files().items():
        defined = {variable["name"] for variable in model["templating"]["list"]}
        assert {"datasource", "instance"} <= defined, name
    negative = {"templating": {"list": [{"name": "datasource"}]},
                "panels": [{"type": "timeseries", "targets": [{"expr": 'up{shard=~"$shard"}'}]}]}
    assert variable_problems(negative) == ["$shard is used but not defined"]


def test_dashboards_read_only_recorded_series_the_rules_record() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = {name for model in dashboard_files().values() for expr in queries_of(model)
            for name in RECORDED.findall(expr)}
    assert used and used <= recorded, used - recorded


def test_the_slo_numbers_of_dashboards_and_rules_agree() -> None:
    """dashboards/slo.py (the dashboards' thresholds) and dashboards/alerts.yml (the alerts) state the
    same objectives, and the latency threshold is a bucket bound the router's histogram exports."""
    assert slo.HOLD_LATENCY_THRESHOLD_S in LATENCY_BUCKETS_S
    exprs = {rule.get("record") or rule["alert"]: " ".join(rule["expr"].split()) for rule in rules()}
    availability, latency = slo.budget(slo.HOLD_AVAILABILITY_OBJECTIVE), slo.budget(slo.HOLD_LATENCY_OBJECTIVE)
    for window in ("5m", "30m", "1h", "6h", "3d"):
        slow = exprs[slo.LATENCY_SLOW_RATIO.format(window=window)]
        assert f'le="{slo.HOLD_LATENCY_THRESHOLD_S}"' in slow and f"[{window}]" in slow
        assert f'route="{slo.HOLD_ROUTE}", method="{slo.HOLD_METHOD}"' in slow
        assert f"[{window}]" in exprs[slo.AVAILABILITY_ERROR_RATIO.format(window=window)]
    for alert, budget in (("TicketingHoldAvailabilityBudgetBurn", availability),
                          ("TicketingHoldLatencyBudgetBurn", latency)):
        for burn, long_window, short_window in slo.PAGE_BURNS:
            assert f"rate{long_window} > ({burn:g} * {budget:g})" in exprs[alert], alert
            assert f"rate{short_window} > ({burn:g} * {budget:g})" in exprs[alert], alert
        for burn, long_window, short_window in slo.TICKET_BURNS:
            assert burn == 1.0
            assert f"rate{long_window} > {budget:g}" in exprs[f"{alert}Slow"]
            assert f"rate{short_window} > {budget:g}" in exprs[f"{alert}Slow"]
    header = (DASHBOARDS / "alerts.yml").read_text()
    availability_text = f"{slo.HOLD_AVAILABILITY_OBJECTIVE:.1%}".replace("%", " %")
    latency_text = f"{slo.HOLD_LATENCY_OBJECTIVE:.0%}".replace("%", " %")
    assert f"{availability_text} of holds answered without a 5xx" in header
    assert f"{latency_text} of holds answered within {slo.HOLD_LATENCY_THRESHOLD_S} s" in header
