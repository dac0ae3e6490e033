"""A real Prometheus on the config `ticketing up` wrote for the test cluster
(`<data>/observability/prometheus.yml`, only the scrape interval and the storage path changed):
every target it names is up (router, actors, Ray), every dashboard query and every rule of every
rule file evaluates, and a short mixed load — holds, an expiry, a paid and a declined checkout, a
refund, a check-in, a rate-limited burst, a body refused at the edge, a live seat-map stream that
sees a change, a waiting room with a buyer admitted after an ETA, a search listed twice (cache miss,
then hit), an organizer's sales report and CSV export — leaves data in the series of each of those
paths, and in every query of every dashboard: a panel never shows "no data" after a sale, also for
the failures that did not happen (their series start at 0).

Prometheus is not a Python package: `.ci/run` installs Debian's `prometheus` when it can, and this
module is skipped where the binary is absent (say, a laptop running `make test`).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cluster.observability import observability_dir
from cluster.runstate import free_port
from tests.harness import RunningCluster
from tests.support import create_event, event_body, ga, hold, race, seated

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="no prometheus binary (see .ci/run)"),
]

ROOT = Path(__file__).resolve().parents[2]
SCRAPE_WAIT_S = 60.0
STREAM_WAIT_S = 10.0
# The shortest hold tests may ask for (TICKETING_MIN_HOLD_SECONDS in tests/harness.py), and how
# long after it the actor's expiry timer has surely run (hold_expiry_tick_ms is 200).
SHORT_HOLD_S = 1
EXPIRY_WAIT_S = 1.5
# More requests at once than a buyer's burst (TICKETING_RATE_LIMIT_USER_BURST=40 in the harness).
RATE_LIMIT_BURST_REQUESTS = 60
# More than the router accepts (TICKETING_BODY_BYTES_MAX, 64 KiB by default): refused with 413.
OVERSIZE_BODY_BYTES = 70_000
# A waiting room admitting two buyers a second: of six who join at once, the first second's worth
# (and a little more) is admitted at once and the last waits about two seconds with an ETA, so its
# admission measures the ETA's error.
QUEUE_ADMIT_PER_SECOND = 2
QUEUE_JOINERS = 6
QUEUE_TOKEN_S = 60
QUEUE_WAIT_S = 8.0
QUEUE_POLL_S = 0.2
# Series each path of the mixed load must have left: a query of these returning nothing means a
# panel would show nothing for something that happened.
MUST_HAVE_DATA = (
    "ticketing_component_up",
    "ticketing_shard_batch_size_bucket",
    "ticketing_actor_commits_total",
    'ticketing_http_requests_total{route="/v1/holds", status="201"}',
    'ticketing_http_requests_total{status="429"}',
    'ticketing_holds_total{result="created"}',
    'ticketing_holds_total{result="expired"}',
    'ticketing_holds_total{result="converted"}',
    'ticketing_checkouts_total{result="confirmed"}',
    'ticketing_checkouts_total{result="declined"}',
    "ticketing_payment_calls_total",
    "ticketing_refunds_total",
    "ticketing_http_checkins_total",
    "ticketing_checkins_total",
    "ticketing_tickets_issued_total",
    "ticketing_rate_limited_total",
    "ticketing_seat_streams_opened_total",
    "ticketing_seat_stream_events_total",
    "ticketing_seat_feed_entries_read_total",
    'ticketing_actor_seat_feed_entries_total{result="published"}',
    'ticketing_http_rejected_total{reason="body_too_large"} > 0',
    'ticketing_queue_steps_total{status="waiting"} > 0',
    "ticketing_queue_eta_error_seconds_count > 0",
    'ticketing_queue_admissions_used_total{result="marked"} > 0',
    'ticketing_events_cache_lookups_total{result="hit"} > 0',
    "ticketing_events_list_duration_seconds_count > 0",
    'ticketing_event_exports_total{result="complete"} > 0',
)
# Grafana's own interval variables, and the dashboards' template variables (shard, route, …),
# which Prometheus does not know: the interval becomes a window, a variable matches everything.
GRAFANA_INTERVAL = re.compile(r"\$\{?__(?:rate_interval|interval|range)(?:_ms|_s)?\}?")
GRAFANA_VARIABLE = re.compile(r"\$\{\w+(?::\w+)?\}|\$\w+")


def as_promql(expression: str) -> str:
    return GRAFANA_VARIABLE.sub(".*", GRAFANA_INTERVAL.sub("1m", expression))


def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, those nested in rows (collapsed or not) included."""
    for panel in node.get("panels", []):
        yield panel
        yield from panels(panel)


def dashboard_expressions() -> dict[str, str]:
    """`file: panel title` → PromQL of every target of every panel of every dashboard."""
    found = {}
    for path in sorted((ROOT / "dashboards" / "grafana").glob("*.json")):
        for panel in panels(json.loads(path.read_text())):
            for index, target in enumerate(panel.get("targets", [])):
                if target.get("expr"):
                    found[f"{path.name}: {panel.get('title', '?')} #{index}"] = as_promql(target["expr"])
    return found


def rule_expressions(rule_files: list[str]) -> list[tuple[str, str]]:
    """(`file: rule name`, PromQL) of every rule, alerting or recording, of every rule file."""
    return [(f"{Path(name).name}: {rule.get('alert') or rule.get('record')}", str(rule["expr"]))
            for name in rule_files
            for group in yaml.safe_load(Path(name).read_text())["groups"] for rule in group["rules"]]


def generated_config(cluster: RunningCluster) -> dict[str, Any]:
    return dict(yaml.safe_load((observability_dir(cluster.data_dir) / "prometheus.yml").read_text()))


@dataclass
class Scraped:
    url: str
    config: dict[str, Any]
    # The rules as Prometheus read them at its start (the files may be edited while it runs).
    rules: list[tuple[str, str]]
    stream_changes: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def prometheus(cluster: RunningCluster, http: httpx.Client, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Scraped]:
    folder = tmp_path_factory.mktemp("prometheus")
    config = generated_config(cluster)
    config["global"]["scrape_interval"] = "1s"
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    rules = rule_expressions(config["rule_files"])
    process = subprocess.Popen(
        ["prometheus", f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        scraped = Scraped(f"http://127.0.0.1:{port}", config, rules)
        wait_for(lambda: all_targets_up(scraped.url), "every target scraped and up")
        for round_number in range(2):  # the second after scrapes saw the first, so rate() sees an increase
            scraped.stream_changes += mixed_load(http, cluster, round_number)
            time.sleep(2)
        wait_for(lambda: all(series(scraped.url, name) for name in MUST_HAVE_DATA),
                 "the series of every path of the mixed load")
        time.sleep(2)  # a few more scrapes, so rate() over [1m] has points after the last request
        yield scraped
    finally:
        process.terminate()
        process.wait(30)


def mixed_load(http: httpx.Client, cluster: RunningCluster, round_number: int) -> list[str]:
    """One round of what a sale does, each step checked; returns the live changes a stream saw."""
    tag = f"prom-{round_number}-{uuid.uuid4().hex[:6]}"
    # The floor is dynamically priced, so the price panel and the price-move counter see a move
    # (the test cluster reprices every 0.5 s, tests/harness.py); section A's price stays fixed.
    dynamic = {"mode": "dynamic", "floor_cents": 9900, "ceiling_cents": 19900}
    event = create_event(http, cluster, event_body({**ga("floor", 50), "pricing": dynamic}, seated("A", [10])))
    short = create_event(http, cluster, event_body(ga("floor", 5), hold_seconds=SHORT_HOLD_S))
    assert hold(http, cluster, f"{tag}-late", {"event_id": short["id"], "section": "floor", "quantity": 1}
                ).status_code == 201  # expires while the rest runs
    changes = watch_a_change(http, cluster, event, f"{tag}-watched")

    paid = checkout(http, cluster, event, f"{tag}-payer", "tok_visa")
    assert paid.status_code == 201, paid.text
    declined = checkout(http, cluster, event, f"{tag}-decliner", "tok_declined")
    assert declined.status_code == 402, declined.text
    refunded = http.post(f"/v1/orders/{paid.json()['order']['id']}/refund", headers=cluster.headers(f"{tag}-payer"))
    assert refunded.status_code == 200, refunded.text

    admitted = checkout(http, cluster, event, f"{tag}-guest", "tok_visa")
    assert admitted.status_code == 201, admitted.text
    validator = cluster.headers(f"{tag}-gate", "validator", events=[event["id"]])
    checked_in = http.post("/v1/checkins", json={"code": admitted.json()["tickets"][0]["code"], "gate": "north"},
                           headers=validator)
    assert checked_in.status_code == 200, checked_in.text

    body = {"event_id": event["id"], "section": "floor", "quantity": 1}
    burst = asyncio.run(race(cluster, [(f"{tag}-flooder", "POST", "/v1/holds", body, {})
                                       for _ in range(RATE_LIMIT_BURST_REQUESTS)],
                             concurrency=RATE_LIMIT_BURST_REQUESTS))
    assert 429 in {response.status_code for response in burst}
    refused = http.post("/v1/holds", content=b"x" * OVERSIZE_BODY_BYTES,
                        headers={**cluster.headers(f"{tag}-oversize"), "content-type": "application/json"})
    assert refused.status_code == 413, refused.text

    wait_in_line(http, cluster, tag)
    browse_and_report(http, cluster, event)
    time.sleep(EXPIRY_WAIT_S)
    after = http.get(f"/v1/events/{short['id']}/availability").json()
    assert after["total_available"] == 5, after  # the short hold expired
    return changes


def wait_in_line(http: httpx.Client, cluster: RunningCluster, tag: str) -> None:
    """A queue-mode event: buyers join at once, the last one waits with an ETA and polls until it is
    admitted (the ETA's error is observed then), and holds with its queue token."""
    body = event_body(ga("floor", 20), queue={"enabled": True, "admit_per_second": QUEUE_ADMIT_PER_SECOND,
                                              "token_seconds": QUEUE_TOKEN_S})
    event_id = create_event(http, cluster, body)["id"]
    path = f"/v1/events/{event_id}/queue"
    users = [f"{tag}-queue-{number}" for number in range(QUEUE_JOINERS)]
    answers = [http.post(path, headers=cluster.headers(user)) for user in users]
    assert all(answer.status_code == 200 for answer in answers), [answer.text for answer in answers]
    last = users[-1]
    assert answers[-1].json()["status"] == "waiting", answers[-1].text
    deadline = time.monotonic() + QUEUE_WAIT_S
    while (answer := http.get(path, headers=cluster.headers(last))).json()["status"] != "admitted":
        assert answer.status_code == 200 and time.monotonic() < deadline, answer.text
        time.sleep(QUEUE_POLL_S)
    held = http.post("/v1/holds", json={"event_id": event_id, "section": "floor", "quantity": 1},
                     headers={**cluster.headers(last), "X-Queue-Token": answer.json()["token"]})
    assert held.status_code == 201, held.text


def browse_and_report(http: httpx.Client, cluster: RunningCluster, event: dict[str, Any]) -> None:
    """The same search twice (a cache miss, then a hit), then the event's organizer reads its sales
    report and exports its orders as CSV."""
    for _ in range(2):
        listed = http.get("/v1/events", params={"q": "night", "limit": 5})
        assert listed.status_code == 200, listed.text
    organizer = cluster.headers("organizer-1", "organizer")  # create_event's organizer
    sales = http.get(f"/v1/events/{event['id']}/sales", headers=organizer)
    assert sales.status_code == 200, sales.text
    orders = http.get(f"/v1/events/{event['id']}/orders.csv", headers=organizer)
    assert orders.status_code == 200 and orders.text.startswith("order_id,"), orders.text[:200]


def checkout(http: httpx.Client, cluster: RunningCluster, event: dict[str, Any], user: str,
             token: str) -> httpx.Response:
    created = hold(http, cluster, user, {"event_id": event["id"], "section": "floor", "quantity": 1})
    assert created.status_code == 201, created.text
    return http.post(f"/v1/holds/{created.json()['id']}/checkout", json={"payment": {"token": token}},
                     headers={**cluster.headers(user), "Idempotency-Key": f"pay-{created.json()['id']}"},
                     timeout=60)


def watch_a_change(http: httpx.Client, cluster: RunningCluster, event: dict[str, Any], user: str) -> list[str]:
    """Open the event's live seat map, hold a seat, and read until the stream shows the change."""
    seen: list[str] = []
    with http.stream("GET", f"/v1/events/{event['id']}/seats/stream", timeout=STREAM_WAIT_S) as response:
        assert response.status_code == 200
        held = False
        for line in response.iter_lines():
            if not line.startswith("event:"):
                continue
            kind = line.partition(":")[2].strip()
            seen.append(kind)
            if kind == "snapshot" and not held:
                assert hold(http, cluster, user, {"event_id": event["id"], "seats": ["A-1-1"]}).status_code == 201
                held = True
            elif kind == "seats":
                return seen
    raise AssertionError(f"the stream ended without showing the hold: {seen}")


def query(url: str, expr: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json())


def series(url: str, expr: str) -> list[Any]:
    return list(query(url, f"count({expr})").get("data", {}).get("result", []))


def targets(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"])


def all_targets_up(url: str) -> bool:
    found = targets(url)
    return bool(found) and all(target["health"] == "up" for target in found)


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, ValueError, KeyError):  # not listening yet, or 503 text while it starts
            pass
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never had {what} within {SCRAPE_WAIT_S} s")


def test_promtool_accepts_the_generated_config_and_every_rule_file(cluster: RunningCluster) -> None:
    config_file = observability_dir(cluster.data_dir) / "prometheus.yml"
    rule_files = generated_config(cluster)["rule_files"]
    assert str((ROOT / "dashboards" / "alerts.yml").resolve()) in rule_files
    for command in (["promtool", "check", "config", str(config_file)], ["promtool", "check", "rules", *rule_files]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_target_of_the_generated_config_is_up(prometheus: Scraped) -> None:
    """Router, actors and — for the local Ray the harness runs — Ray's metrics agent."""
    jobs = {job["job_name"] for job in prometheus.config["scrape_configs"]}
    assert {"ticketing-router", "ticketing-actors", "ray"} <= jobs
    found = targets(prometheus.url)
    assert {target["labels"]["job"] for target in found} == jobs
    assert [(target["scrapeUrl"], target["lastError"]) for target in found if target["health"] != "up"] == []
    assert series(prometheus.url, '{job="ray", __name__=~"ray_.+"}'), "Ray's own metrics"


def test_every_dashboard_and_rule_query_evaluates(prometheus: Scraped) -> None:
    expressions = {**dashboard_expressions(), **dict(prometheus.rules)}
    assert len(expressions) > 20, expressions
    failures = {}
    for name, expr in expressions.items():
        answer = query(prometheus.url, expr)
        if answer.get("status") != "success":
            failures[name] = (expr, answer.get("error"))
    assert failures == {}


def test_every_dashboard_query_returns_data_after_the_mixed_load(prometheus: Scraped) -> None:
    """Every query of every panel has a result: what the load did, and 0 for what did not happen (a
    failure's series exists from the start; an error ratio is 0 without errors). A panel with no
    data would look like a broken scrape to whoever watches the sale."""
    expressions = dashboard_expressions()
    assert len(expressions) > 100, len(expressions)
    # Negative control: a query of a series nobody exports has no result, and would be reported.
    assert query(prometheus.url, "sum(rate(ticketing_never_exported_total[1m]))")["data"]["result"] == []
    empty = [name for name, expr in expressions.items() if not query(prometheus.url, expr)["data"]["result"]]
    assert empty == [], "panels without data:\n" + "\n".join(empty)


def test_the_mixed_load_left_data_in_every_path(prometheus: Scraped) -> None:
    missing = [name for name in MUST_HAVE_DATA if not series(prometheus.url, name)]
    assert missing == []
    rate_of_holds = query(prometheus.url, 'sum(rate(ticketing_holds_total{result="created"}[1m]))')["data"]["result"]
    assert rate_of_holds and float(rate_of_holds[0]["value"][1]) > 0
    assert prometheus.stream_changes.count("seats") == 2, prometheus.stream_changes  # one change seen per round
    moves = query(prometheus.url, "sum(ticketing_price_changes_total)")["data"]["result"]
    assert moves and float(moves[0]["value"][1]) > 0, "the mixed load's dynamic floor moved its price"
    prices = series(prometheus.url, "ticketing_section_price_cents")
    assert prices, "every exported section has a price series"


def test_alert_rules_load_and_evaluate(prometheus: Scraped) -> None:
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while True:
        groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule.get("health") == "ok" for rule in rules):
            break
        problems = [(rule["name"], rule.get("health"), rule.get("lastError")) for rule in rules]
        assert time.monotonic() < deadline, problems
        time.sleep(1)
    assert len(rules) == len(prometheus.rules)
