"""429 RATE_LIMITED with Retry-After for a buyer who sends too much, before any work is done."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.harness import RunningCluster
from tests.support import problem, race

pytestmark = pytest.mark.e2e


def test_a_flooding_buyer_is_rate_limited(cluster: RunningCluster) -> None:
    body = {"event_id": str(uuid.uuid4()), "section": "floor", "quantity": 1}
    requests = [("flooder", "POST", "/v1/holds", body, {}) for _ in range(80)]
    responses = asyncio.run(race(cluster, requests, concurrency=80))
    statuses = {response.status_code for response in responses}
    assert statuses <= {404, 429}, statuses
    limited = [response for response in responses if response.status_code == 429]
    assert limited, "80 requests at once from one buyer passed a burst of 40"
    body = problem(limited[0], 429, "RATE_LIMITED")
    assert int(limited[0].headers["Retry-After"]) >= 1 and body["detail"]
    # Another buyer from the same address is not affected.
    other = asyncio.run(race(cluster, [("patient", "POST", "/v1/holds", body, {})]))
    assert other[0].status_code != 429
