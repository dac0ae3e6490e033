"""The platform against a real cluster: readiness, auth, migrations, metrics, the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import asyncpg
import httpx
import pytest

from cluster.native import CORE_STATUS
from router.auth import issue_token
from shards.migrate import load_migrations
from tests.harness import RunningCluster

pytestmark = pytest.mark.integration


def test_readyz_names_every_component(http: httpx.Client, cluster: RunningCluster) -> None:
    response = http.get("/readyz")
    assert response.status_code == 200
    components = response.json()["components"]
    expected = {"ray", "redis"} | {f"shard-{k}" for k in range(4)} | {f"postgres-{k}" for k in range(4)}
    assert set(components) == expected
    assert set(components.values()) == {"ok"}


def test_deployment_token_is_accepted_and_foreign_one_rejected(http: httpx.Client, cluster: RunningCluster) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "token", "--data-dir", str(cluster.data_dir), "--sub", "alice",
         "--role", "buyer"], capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    ok = http.get("/v1/me", headers={"Authorization": f"Bearer {printed}"})
    assert ok.status_code == 200 and ok.json() == {"sub": "alice", "role": "buyer"}

    foreign = issue_token("a-secret-of-some-other-deployment-000", "alice", "buyer", 60)
    refused = http.get("/v1/me", headers={"Authorization": f"Bearer {foreign}"})
    assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHENTICATED"


def test_token_count_prints_one_token_per_subject(cluster: RunningCluster, http: httpx.Client) -> None:
    lines = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "token", "--data-dir", str(cluster.data_dir), "--sub", "load",
         "--role", "buyer", "--count", "5"], capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()
    subjects = [http.get("/v1/me", headers={"Authorization": f"Bearer {line}"}).json()["sub"] for line in lines]
    assert subjects == [f"load-{index}" for index in range(5)]


def test_every_shard_database_is_migrated(cluster: RunningCluster) -> None:
    dsns = list(cluster.state()["pg_dsns"])  # type: ignore[call-overload]
    assert len(dsns) == 4 and len(set(dsns)) == 4
    newest = max(migration.version for migration in load_migrations())

    async def versions() -> list[int]:
        found = []
        for dsn in dsns:
            connection = await asyncpg.connect(dsn)
            try:
                found.append(await connection.fetchval("SELECT max(version) FROM schema_migrations"))
            finally:
                await connection.close()
        return found

    assert asyncio.run(versions()) == [newest] * 4


def test_migrate_command_is_idempotent(cluster: RunningCluster) -> None:
    output = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "migrate", "--data-dir", str(cluster.data_dir)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    assert output.count("up to date") == 4


def test_status_command_reports_healthy(cluster: RunningCluster) -> None:
    """Every shard is up, and runs the same build of the core as this test process."""
    expected_core = "compiled" if CORE_STATUS.compiled else "interpreted"
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "status", "--data-dir", str(cluster.data_dir)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("up pid") == 4 and "healthy" in result.stdout
    assert result.stdout.count(f"({expected_core} core)") == 4, result.stdout


def router_metrics(http: httpx.Client, *wanted: str) -> str:
    """The router's /metrics once it shows every `wanted` text: request counts reach the series at
    most `metrics_flush_interval_s` (1 s) after the requests (router/http_metrics.py RequestTally)."""
    deadline = time.monotonic() + 5
    while True:
        text = http.get("/metrics").text
        if all(item in text for item in wanted) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_metrics_aggregate_router_workers(http: httpx.Client) -> None:
    for _ in range(10):
        http.get("/healthz")
    series = 'ticketing_http_requests_total{method="GET",route="/healthz",status="200"}'
    text = router_metrics(http, series)
    assert series in text
    assert "ticketing_component_up" in text


def test_openapi_is_served(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    assert "/readyz" in spec["paths"] and "/healthz" in spec["paths"]


def test_router_and_actors_export_their_metrics(http: httpx.Client, cluster: RunningCluster) -> None:
    """After one event and one hold, the series the dashboard is built on are really exported."""
    from tests.support import create_event, event_body, hold

    event = create_event(http, cluster, event_body())
    assert hold(http, cluster, "metrics-buyer", {"event_id": event["id"], "section": "floor",
                                                  "quantity": 1}).status_code == 201
    names = ("ticketing_http_requests_total{", "ticketing_http_request_duration_seconds_bucket",
             "ticketing_shard_batch_size_bucket", "ticketing_shard_call_duration_seconds_bucket")
    router_text = router_metrics(http, *names)
    for name in names:
        assert name in router_text, name
    actors_text = http.get("/metrics/actors").text
    for name in ("ticketing_actor_commits_total", "ticketing_actor_commit_commands_bucket",
                 'ticketing_holds_total{result="created"', "ticketing_actor_recovery_seconds",
                 "ticketing_actor_epoch", "ticketing_active_holds"):
        assert name in actors_text, name
    assert "_created" not in actors_text
