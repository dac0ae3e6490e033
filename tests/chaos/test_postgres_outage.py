"""/readyz tells the truth about Postgres: 503 naming it while it is down, 200 once it is back."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from cluster.embedded import EmbeddedPostgres
from tests.harness import RunningCluster

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(bool(os.environ.get("TICKETING_PG_DSNS")), reason="stops the embedded Postgres only"),
]

RECOVERY_TIMEOUT_S = 60.0


def wait_for(http: httpx.Client, predicate, timeout_s: float) -> httpx.Response:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        response = http.get("/readyz")
        if predicate(response) or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def test_readyz_follows_postgres_down_and_up(http: httpx.Client, cluster: RunningCluster) -> None:
    postgres = EmbeddedPostgres(cluster.data_dir, port=int(cluster.state()["postgres_port"]))  # type: ignore[call-overload]
    assert http.get("/readyz").status_code == 200
    postgres.stop()
    try:
        down = wait_for(http, lambda r: r.status_code == 503, RECOVERY_TIMEOUT_S)
        assert down.status_code == 503
        body = down.json()
        assert body["code"] == "NOT_READY"
        assert {f"postgres-{k}" for k in range(4)} <= set(body["down"])
        assert "redis" not in body["down"] and "ray" not in body["down"]
    finally:
        postgres.start()
    back = wait_for(http, lambda r: r.status_code == 200, RECOVERY_TIMEOUT_S)
    assert back.status_code == 200, back.text
