"""Shared fixtures: one real cluster per test session for the integration, e2e and chaos suites.

The unit suite never touches these fixtures, so `pytest -m unit` runs in seconds with no server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cluster.native import CORE_STATUS
from tests.harness import RunningCluster, running_cluster


def pytest_report_header() -> str:
    """Which build of the inventory core this run tests (cluster/native.py)."""
    return f"inventory core: {CORE_STATUS.detail}"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    with running_cluster(Path(tmp_path_factory.mktemp("cluster")) / "data") as running:
        yield running


@pytest.fixture(scope="session")
def http(cluster: RunningCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def ray_driver(cluster: RunningCluster) -> Iterator[None]:
    """This test process joined to the cluster's Ray as a driver (for actor-level tests)."""
    from cluster.raycluster import prepare_local_ray_environment

    prepare_local_ray_environment()
    import ray

    from tests.actor_support import TEST_NAMESPACE

    ray.init(address=str(cluster.state()["ray_address"]), namespace=TEST_NAMESPACE, logging_level="ERROR",
             log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()  # the test actors die with this driver, closing their connections
        from tests.actor_support import drop_created_databases

        drop_created_databases()
