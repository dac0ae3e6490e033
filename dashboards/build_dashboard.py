"""Writes the Grafana dashboards to dashboards/grafana/<name>.json (run: python dashboards/build_dashboard.py).

The dashboards are data, built from one Python source: `dashboards/panels.py` holds the pieces
(one unit per panel, descriptions, `$__rate_interval`, the datasource/instance/shard/route
variables), `board_onsale.py`, `board_shards.py` and `board_http.py` the three dashboards. Edit
those, not the JSON; tests/unit/test_dashboards.py fails when the JSON is stale, when a panel breaks
a rule, when a query names a metric the code does not declare, or when a declared metric is on no
dashboard and in no alert rule.

`concrete(expr)` turns a dashboard query into plain PromQL (Grafana's variables replaced by what
they mean with everything selected), for checks that evaluate the queries against a Prometheus.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root holds the `dashboards` package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboards import board_http, board_onsale, board_shards

GRAFANA = Path(__file__).resolve().with_name("grafana")
DASHBOARDS = {"onsale": board_onsale.DASHBOARD, "shards": board_shards.DASHBOARD, "http": board_http.DASHBOARD}
# What Grafana substitutes, as an instant query outside Grafana may stand it in: a rate window of a
# few scrapes, the last hour as the range, every value of a multi-value variable.
VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*", "$shard": ".*", "$route": ".*"}
_VARIABLE = re.compile(r"\$(__rate_interval|__range|instance|shard|route)\b")


def build_all() -> dict[str, dict[str, Any]]:
    """Every dashboard's JSON model, by file name (without `.json`)."""
    return {name: dashboard.model() for name, dashboard in DASHBOARDS.items()}


def panels_of(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard model, rows and the panels inside collapsed rows included."""
    for item in model.get("panels", []):
        yield item
        yield from panels_of(item)


def queries_of(model: dict[str, Any]) -> Iterator[str]:
    """Every PromQL expression a dashboard runs: panel targets and annotations."""
    for item in panels_of(model):
        for target in item.get("targets", []):
            yield target["expr"]
    for annotation in model.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            yield annotation["expr"]


def concrete(expr: str) -> str:
    return _VARIABLE.sub(lambda match: VARIABLES[match.group(0)], expr)


def write_all() -> list[Path]:
    GRAFANA.mkdir(exist_ok=True)
    written = []
    for name, model in build_all().items():
        path = GRAFANA / f"{name}.json"
        path.write_text(json.dumps(model, indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all():
        print(f"wrote {path}")
