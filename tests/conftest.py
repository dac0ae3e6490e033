"""Shared fixtures: one real cluster per test session for the integration, e2e and chaos suites.

The unit suite never touches these fixtures, so `pytest -m unit` runs in seconds with no server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import RunningCluster, down, start_cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    data_dir = Path(tmp_path_factory.mktemp("cluster")) / "data"
    running = start_cluster(data_dir)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()
        down(data_dir)


@pytest.fixture(scope="session")
def http(cluster: RunningCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.base_url, timeout=30) as client:
        yield client
