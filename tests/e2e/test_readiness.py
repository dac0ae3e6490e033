"""Readiness watched continuously: `ticketing_component_up` follows a component going down and
coming back without anyone calling `/readyz` (the harness probes every second)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.harness import RunningCluster

pytestmark = pytest.mark.e2e

CHANGE_WAIT_S = 10.0  # several probe rounds of the harness's 1 s, on a busy box


def component_up(http: httpx.Client, component: str) -> list[float]:
    """The gauge per router worker (liveall: one sample per live worker)."""
    return [float(line.split()[-1]) for line in http.get("/metrics").text.splitlines()
            if line.startswith("ticketing_component_up{") and f'component="{component}"' in line]


def wait_for(http: httpx.Client, component: str, value: float) -> list[float]:
    deadline = time.monotonic() + CHANGE_WAIT_S
    while True:
        samples = component_up(http, component)
        if (samples and all(sample == value for sample in samples)) or time.monotonic() > deadline:
            return samples
        time.sleep(0.25)


def test_component_gauges_follow_redis_without_readyz_calls(http: httpx.Client, cluster: RunningCluster) -> None:
    import redis

    assert wait_for(http, "redis", 1.0) and all(sample == 1.0 for sample in component_up(http, "redis"))
    client = redis.Redis.from_url(str(cluster.state()["redis_url"]))
    client.execute_command("CLIENT", "PAUSE", 6000, "ALL")  # PING now waits past probe_timeout_s
    try:
        samples = wait_for(http, "redis", 0.0)
        assert samples and all(sample == 0.0 for sample in samples), samples
        assert all(sample == 1.0 for sample in component_up(http, "postgres-0"))  # only Redis is down
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
    samples = wait_for(http, "redis", 1.0)
    assert samples and all(sample == 1.0 for sample in samples), samples
    assert http.get("/readyz").status_code == 200
