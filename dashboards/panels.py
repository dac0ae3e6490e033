"""The pieces every dashboard is built from: PromQL helpers, panels, rows, variables, layout.

A panel shows one kind of quantity, so it has one unit, and says what it shows in its description;
every window is Grafana's `$__rate_interval` (at least four scrape intervals, whatever the zoom) or
`$__range` (the whole time range, for counts of rare things), never a fixed `[1m]` that would be
empty at a 5-minute zoom step or noisy at a 15-second one. tests/unit/test_dashboards.py checks all
of this on the generated JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cluster.settings import Settings

RATE_WINDOW = "$__rate_interval"
WHOLE_RANGE = "$__range"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Label matchers of the template variables. Router series carry the router's `instance`; actor
# series are gathered through a router (/metrics/actors), so they are selected by `shard` alone.
ON_INSTANCE = 'instance=~"$instance"'
ON_SHARD = 'shard=~"$shard"'
ON_ROUTE = 'route=~"$route"'
GRID_WIDTH = 24
HEIGHT = 8
STAT_HEIGHT = 5
GREEN, YELLOW, RED = "green", "yellow", "red"


# --- PromQL ------------------------------------------------------------------------------------------


def selector(*matchers: str) -> str:
    chosen = [matcher for matcher in matchers if matcher]
    return "{" + ", ".join(chosen) + "}" if chosen else ""


def summed(inner: str, by: str = "") -> str:
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def rate(metric: str, by: str = "", *matchers: str) -> str:
    """Per-second rate of a counter, summed (by `by`) over the selected series."""
    return summed(f"rate({metric}{selector(*matchers)}[{RATE_WINDOW}])", by)


def increase_in_range(metric: str, by: str = "", *matchers: str) -> str:
    """How much a counter grew over the dashboard's whole time range (for rare things)."""
    return summed(f"increase({metric}{selector(*matchers)}[{WHOLE_RANGE}])", by)


def quantile(q: float, histogram: str, by: str = "", *matchers: str) -> str:
    labels = "le" if not by else f"le, {by}"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({histogram}_bucket{selector(*matchers)}[{RATE_WINDOW}])))"


def mean(histogram: str, by: str = "", *matchers: str) -> str:
    """The mean observation of a histogram over the window: its sum's rate over its count's."""
    return (f"{rate(histogram + '_sum', by, *matchers)}"
            f" / {rate(histogram + '_count', by, *matchers)}")


def or_zero(part: str, whole: str) -> str:
    """`part`, and 0 for every series of `whole` (grouped by the same labels) that `part` lacks.

    A labelled counter has no series until its first increment, so the 5xx of a healthy route, or
    the 503 of a healthy waiting room, would be "no data" rather than 0."""
    return f"({part} or {whole} * 0)"


def share(part: str, whole: str) -> str:
    """`part / whole`, 0 (not nothing) where `part` has no series yet: an error ratio is 0 without errors."""
    return f"{or_zero(part, whole)} / {whole}"


def setting_default(setting: str) -> float:
    """A setting's default, for a threshold line at the bound it names (a deployment may set another)."""
    value = Settings.model_fields[setting].default
    if not isinstance(value, int | float):
        raise TypeError(f"{setting} is not a number")
    return float(value)


# --- panels --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """A value at which the panel turns `color`, drawn as a line on time series."""

    value: float
    color: str = RED


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    unit: str
    queries: tuple[tuple[str, str], ...]  # (expr, legend)
    kind: str = "timeseries"
    thresholds: tuple[Threshold, ...] = ()
    width: int = 12
    mappings: tuple[tuple[int, str, str], ...] = ()  # value → text, color (state timelines, stats)
    stack: bool = False
    base: str = GREEN  # the color below the first threshold (red where higher is better)

    def model(self) -> dict[str, Any]:
        defaults: dict[str, Any] = {"unit": self.unit, "thresholds": {"mode": "absolute", "steps": [
            {"color": self.base, "value": None},
            *({"color": threshold.color, "value": threshold.value} for threshold in self.thresholds)]}}
        if self.kind == "timeseries":
            defaults["custom"] = {"thresholdsStyle": {"mode": "line" if self.thresholds else "off"},
                                  "stacking": {"mode": "normal" if self.stack else "none"}}
            if self.unit in ("percentunit", "short", "ops", "reqps", "s"):
                defaults["min"] = 0
        if self.mappings:
            defaults["mappings"] = [{"type": "value", "options": {
                str(value): {"text": text, "color": color} for value, text, color in self.mappings}}]
            defaults["color"] = {"mode": "thresholds"}
        instant = self.kind == "stat"
        return {
            "type": self.kind, "title": self.title, "description": self.description, "datasource": DATASOURCE,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": self._options(),
            "targets": [{"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + index),
                         "instant": instant, "range": not instant}
                        for index, (expr, legend) in enumerate(self.queries)],
        }

    def _options(self) -> dict[str, Any]:
        if self.kind == "stat":
            return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "none", "textMode": "value_and_name"}
        if self.kind == "state-timeline":
            return {"showValue": "never", "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
        return {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                           "calcs": ["lastNotNull", "max"]},
                "tooltip": {"mode": "multi", "sort": "desc"}}


def panel(title: str, description: str, unit: str, *queries: tuple[str, str], **options: Any) -> Panel:
    return Panel(title, description, unit, tuple(queries), **options)


def stat(title: str, description: str, unit: str, *queries: tuple[str, str], **options: Any) -> Panel:
    return Panel(title, description, unit, tuple(queries), kind="stat", width=options.pop("width", 6), **options)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]
    collapsed: bool = False


def row(title: str, *panels: Panel, collapsed: bool = False) -> Row:
    return Row(title, panels, collapsed)


# --- variables and annotations ----------------------------------------------------------------------------


def datasource_variable() -> dict[str, Any]:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [],
            "description": "The Prometheus that scrapes this deployment."}


def label_variable(name: str, metric: str, description: str) -> dict[str, Any]:
    """A multi-value variable over the values of label `name` on `metric`; All is the regex `.*`."""
    definition = f"label_values({metric}, {name})"
    return {"name": name, "label": name.capitalize(), "type": "query", "datasource": DATASOURCE,
            "definition": definition, "query": {"query": definition, "refId": f"{name}-values"},
            "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*", "sort": 3, "hide": 0,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [], "regex": "",
            "description": description}


INSTANCE = label_variable("instance", "ticketing_http_requests_total",
                          "Router hosts (each /metrics aggregates all uvicorn workers of one host).")
SHARD = label_variable("shard", "ticketing_actor_epoch", "Shard actors (and their PostgreSQL shards).")
ROUTE = label_variable("route", "ticketing_http_requests_total", "Route templates, as the router names them.")


@dataclass(frozen=True)
class Annotation:
    name: str
    expr: str
    title: str
    text: str
    color: str = "orange"

    def model(self) -> dict[str, Any]:
        return {"name": self.name, "datasource": DATASOURCE, "enable": True, "hide": False, "iconColor": self.color,
                "expr": self.expr, "step": "15s", "titleFormat": self.title, "textFormat": self.text,
                "tagKeys": "shard", "useValueForTime": False}


# --- the dashboard ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    variables: tuple[dict[str, Any], ...]
    rows: tuple[Row, ...]
    annotations: tuple[Annotation, ...] = field(default=())

    def model(self) -> dict[str, Any]:
        panels: list[dict[str, Any]] = []
        ids = iter(range(1, 1000))
        y = 0
        for section in self.rows:
            row_model: dict[str, Any] = {"type": "row", "title": section.title, "collapsed": section.collapsed,
                                         "id": next(ids), "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                                         "panels": []}
            panels.append(row_model)
            y += 1
            placed, y = _layout(section.panels, y, ids)
            if section.collapsed:
                row_model["panels"] = placed
            else:
                panels.extend(placed)
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": ["ticketing"],
            "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1, "timezone": "browser",
            "time": {"from": "now-30m", "to": "now"}, "refresh": "10s",
            "links": [{"type": "dashboards", "tags": ["ticketing"], "title": "Ticketing dashboards", "asDropdown": True,
                       "includeVars": False, "keepTime": True, "icon": "external link", "targetBlank": False}],
            "templating": {"list": list(self.variables)},
            "annotations": {"list": [_grafana_annotations(), *(item.model() for item in self.annotations)]},
            "panels": panels,
        }


def _layout(panels: tuple[Panel, ...], y: int, ids: Any) -> tuple[list[dict[str, Any]], int]:
    """Left to right, wrapping at the grid's width; returns the panels and the next free y."""
    placed: list[dict[str, Any]] = []
    x, line_height = 0, 0
    for item in panels:
        height = STAT_HEIGHT if item.kind == "stat" else HEIGHT
        if x + item.width > GRID_WIDTH:
            x, y, line_height = 0, y + line_height, 0
        model = item.model()
        model["id"] = next(ids)
        model["gridPos"] = {"h": height, "w": item.width, "x": x, "y": y}
        placed.append(model)
        x += item.width
        line_height = max(line_height, height)
    return placed, y + line_height


def _grafana_annotations() -> dict[str, Any]:
    """Grafana's own annotations (the ones people add by hand), kept as every dashboard has them."""
    return {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}
