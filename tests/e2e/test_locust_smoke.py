"""The on-sale Locust scenarios run end to end for a few seconds against the real cluster (issue 12).

Proves that `python -m loadtest.locust_run` drives `loadtest/locustfile.py` through the whole spike
shape without a single unexpected answer: every user class sent requests, buyers paid and gate
staff admitted what they bought, and the small event, sold out within seconds, was not oversold
(its rows checked in the database, not only through the API). A scenario that drifts from the API
contract shows up here as a failure row in Locust's statistics; the negative control shows that
such rows do appear, and fail the run, when the answers are wrong.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from loadtest.locust_run import LOCUSTFILE
from tests.harness import RunningCluster
from tests.support import check_database, fetch, shard_dsn

pytestmark = pytest.mark.e2e

LOCUST_SECONDS = 10
BASELINE_USERS = 4  # two are gate staff (a fixed count); the spike brings forty
SMALL_CAPACITY = 10  # sold out within the run
RUN_TIMEOUT_S = 120


def stats_rows(report_dir: Path, name: str) -> list[dict[str, str]]:
    with open(report_dir / f"locust_{name}.csv", newline="") as stats:
        return list(csv.DictReader(stats))


def succeeded(rows: list[dict[str, str]], name: str) -> int:
    """Requests of this exact name that got their expected status (renamed outcomes excluded)."""
    return sum(int(row["Request Count"]) - int(row["Failure Count"]) for row in rows if row["Name"] == name)


def test_on_sale_scenarios_run_clean(cluster: RunningCluster, http: httpx.Client, tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.locust_run", "--data-dir", str(cluster.data_dir),
         "--seconds", str(LOCUST_SECONDS), "--users", str(BASELINE_USERS), "--report-dir", str(tmp_path)],
        env={**os.environ, "LOADTEST_SMALL_CAPACITY": str(SMALL_CAPACITY)}, capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S, check=False)
    output = result.stdout[-6000:] + result.stderr[-6000:]
    print(f"locust run took {time.monotonic() - started:.1f} s")
    failures = stats_rows(tmp_path, "failures")
    assert not failures, f"unexpected answers: {failures}\n{output}"
    assert not stats_rows(tmp_path, "exceptions"), output
    assert result.returncode == 0, output
    assert (tmp_path / "report.html").stat().st_size > 0

    rows = [row for row in stats_rows(tmp_path, "stats") if row["Name"] != "Aggregated"]
    for role in ("browse", "buy", "gate"):
        assert sum(int(row["Request Count"]) for row in rows if row["Name"].startswith(f"{role}: ")), \
            f"no {role} requests\n{output}"
    assert succeeded(rows, "buy: POST /v1/holds/{id}/checkout") >= 1, output
    assert succeeded(rows, "gate: POST /v1/checkins") >= 1, output

    events = json.loads((tmp_path / "events.json").read_text())
    orders = checkins = 0
    for event_id in events.values():
        dsn, key = shard_dsn(cluster, event_id), uuid.UUID(event_id)
        orders += asyncio.run(fetch(dsn, "SELECT count(*) AS n FROM orders WHERE event_id = $1", key))[0]["n"]
        checkins += asyncio.run(fetch(dsn, "SELECT count(*) AS n FROM checkins WHERE event_id = $1", key))[0]["n"]
        check_database(cluster, event_id)
    assert orders >= 1 and checkins >= 1, (orders, checkins)
    small = http.get(f"/v1/events/{events['small']}/availability").json()
    for section in small["sections"]:
        assert section["capacity"] == SMALL_CAPACITY, section
        assert section["sold"] + section["held"] + section["available"] == SMALL_CAPACITY, section


def test_wrong_answers_fail_the_run(cluster: RunningCluster, tmp_path: Path) -> None:
    """Negative control: pointed at events that do not exist, every event route answers 404, and
    those answers must be failures that fail the run, not successes or silence."""
    events = tmp_path / "events.json"
    events.write_text(json.dumps({role: str(uuid.uuid4()) for role in ("ga", "seated", "small")}))
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", cluster.base_url,
         "--users", "6", "--spawn-rate", "6", "--run-time", "4s", "--only-summary", "--csv", str(tmp_path / "locust")],
        env={**os.environ, "TICKETING_DATA_DIR": str(cluster.data_dir), "LOADTEST_EVENTS": str(events)},
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    output = result.stdout[-6000:] + result.stderr[-6000:]
    assert result.returncode == 1, output
    failures = stats_rows(tmp_path, "failures")
    assert failures and all("404 EVENT_NOT_FOUND" in row["Error"] for row in failures), failures
