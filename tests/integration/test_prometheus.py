"""Every dashboard query and alert rule, evaluated by a real Prometheus scraping the test cluster.

Prometheus is not a Python package: `.ci/run` installs Debian's `prometheus` when it can, and this
module is skipped where the binary is absent (say, a laptop running `make test`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cluster.runstate import free_port
from tests.harness import RunningCluster
from tests.support import create_event, event_body, hold

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="no prometheus binary (see .ci/run)"),
]

ROOT = Path(__file__).resolve().parents[2]
SCRAPE_WAIT_S = 60.0
# Series the traffic below must have produced: a query of these returning nothing means the
# dashboard would show an empty panel for something that happened.
MUST_HAVE_DATA = ("ticketing_http_requests_total", "ticketing_holds_total", "ticketing_actor_commits_total",
                  "ticketing_shard_batch_size_bucket", "ticketing_component_up")


def expressions() -> list[str]:
    dashboard = json.loads((ROOT / "dashboards" / "grafana" / "ticketing.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    rules = yaml.safe_load((ROOT / "dashboards" / "alerts.yml").read_text())
    return exprs + [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def prometheus(cluster: RunningCluster, http: httpx.Client, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((ROOT / "dashboards" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["rule_files"] = [str(ROOT / "dashboards" / "alerts.yml")]
    target = cluster.base_url.removeprefix("http://")
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [target]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        ["prometheus", f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        event = create_event(http, cluster, event_body())
        for buyer in range(5):
            hold(http, cluster, f"prom-{buyer}", {"event_id": event["id"], "section": "floor", "quantity": 1})
        http.get("/readyz")
        url = f"http://127.0.0.1:{port}"
        wait_for_data(url)
        for buyer in range(5, 10):  # after the first scrapes, so rate() sees an increase
            hold(http, cluster, f"prom-{buyer}", {"event_id": event["id"], "section": "floor", "quantity": 1})
        time.sleep(3)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def query(url: str, expr: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json())


def wait_for_data(url: str) -> None:
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while time.monotonic() < deadline:
        try:
            if all(query(url, f"count({name})").get("data", {}).get("result") for name in MUST_HAVE_DATA):
                time.sleep(2)  # a few more scrapes, so rate() over [1m] has two points
                return
        except (httpx.HTTPError, ValueError):  # not listening yet, or "Service Unavailable" while it starts
            pass
        time.sleep(1)
    raise AssertionError("Prometheus never scraped the core series from the cluster")


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(ROOT / "dashboards" / "alerts.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_query_evaluates(prometheus: str) -> None:
    failures = {}
    for expr in expressions():
        answer = query(prometheus, expr)
        if answer.get("status") != "success":
            failures[expr] = answer.get("error")
    assert failures == {}


def test_core_panels_have_data(prometheus: str) -> None:
    for name in MUST_HAVE_DATA:
        assert query(prometheus, f"count({name})")["data"]["result"], name
    rate_of_holds = query(prometheus, 'sum(rate(ticketing_holds_total{result="created"}[1m]))')["data"]["result"]
    assert rate_of_holds and float(rate_of_holds[0]["value"][1]) > 0


def test_alert_rules_load_and_evaluate(prometheus: str) -> None:
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while True:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule.get("health") == "ok" for rule in rules):
            break
        problems = [(rule["name"], rule.get("health"), rule.get("lastError")) for rule in rules]
        assert time.monotonic() < deadline, problems
        time.sleep(1)
    assert len(rules) == sum(len(group["rules"]) for group in yaml.safe_load(
        (ROOT / "dashboards" / "alerts.yml").read_text())["groups"])
