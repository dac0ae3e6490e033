"""Acknowledged holds, orders and tickets read back over HTTP after the shard actor is SIGKILLed
(issue 10, defect 2), and a checkout retried with its original key after the restart returns the
same order without refunding its charge.

The restarted actor's memory holds no ended hold: confirmed, released and expired holds are read
from Postgres (shards/lookup.py). The negative control (the same reads with the lookup switched off)
is the actor-level one in tests/integration/test_durable_lookup.py: a deployment has no switch.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.harness import RunningCluster
from tests.support import create_event, event_body, fetch, ga, hold, seated, shard_dsn

pytestmark = pytest.mark.chaos

READY_TIMEOUT_S = 120.0


def kill_shard_of(cluster: RunningCluster, event_id: str) -> None:
    """SIGKILL the event's shard actor (Ray restarts it; recovery rebuilds it from Postgres)."""
    import ray

    from cluster.raycluster import NAMESPACE, actor_name
    from cluster.settings import Settings

    shard_id = Settings(shard_count=4).shard_map().shard_of(uuid.UUID(event_id))
    actor = ray.get_actor(actor_name(shard_id), namespace=NAMESPACE)
    os.kill(ray.get(actor.health.remote(), timeout=60)["pid"], signal.SIGKILL)


def get_when_served(http: httpx.Client, path: str, headers: dict[str, str]) -> httpx.Response:
    """GET, waiting out the 503s of the restart; any other answer is returned."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        response = http.get(path, headers=headers)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.3)


def checkout(http: httpx.Client, cluster: RunningCluster, user: str, hold_id: str, key: str) -> httpx.Response:
    return http.post(f"/v1/holds/{hold_id}/checkout", json={"payment": {"token": "tok_visa"}},
                     headers={**cluster.headers(user), "Idempotency-Key": key}, timeout=60)


def test_every_acknowledged_hold_order_and_ticket_reads_back_after_a_sigkill(
        http: httpx.Client, cluster: RunningCluster, ray_driver: None) -> None:
    """Holds confirmed, released and expired, and the order and tickets of the confirmed one, all
    answer 200 with their true status after the actor was killed; another user still gets 404."""
    event = create_event(http, cluster, event_body(ga("floor", 50), seated("A", [10]), hold_seconds=1))
    event_id = event["id"]
    expected: dict[str, tuple[str, str]] = {}
    bought = hold(http, cluster, "ada", {"event_id": event_id, "seats": ["A-1-2"]}, key=f"h-{uuid.uuid4()}").json()
    paid = checkout(http, cluster, "ada", bought["id"], f"pay-{uuid.uuid4()}")
    assert paid.status_code == 201, paid.text
    expected[bought["id"]] = ("ada", "confirmed")
    released = hold(http, cluster, "bo", {"event_id": event_id, "section": "floor", "quantity": 2}).json()
    assert http.delete(f"/v1/holds/{released['id']}", headers=cluster.headers("bo")).status_code == 200
    expected[released["id"]] = ("bo", "released")
    expired = hold(http, cluster, "cy", {"event_id": event_id, "section": "floor", "quantity": 1}).json()
    expected[expired["id"]] = ("cy", "expired")
    deadline = time.monotonic() + 30
    while http.get(f"/v1/holds/{expired['id']}", headers=cluster.headers("cy")).json()["status"] != "expired":
        assert time.monotonic() < deadline
        time.sleep(0.3)

    kill_shard_of(cluster, event_id)
    for hold_id, (user, status) in expected.items():
        response = get_when_served(http, f"/v1/holds/{hold_id}", cluster.headers(user))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status
        assert http.get(f"/v1/holds/{hold_id}", headers=cluster.headers("mallory")).status_code == 404
    order = paid.json()["order"]
    read = get_when_served(http, f"/v1/orders/{order['id']}", cluster.headers("ada"))
    assert read.status_code == 200 and read.json()["status"] == "confirmed", read.text
    for ticket in paid.json()["tickets"]:
        again = get_when_served(http, f"/v1/tickets/{ticket['id']}", cluster.headers("ada"))
        assert again.status_code == 200 and again.json()["status"] == "valid", again.text


def test_checkout_retried_with_its_key_after_a_restart_returns_the_order_and_refunds_nothing(
        http: httpx.Client, cluster: RunningCluster, ray_driver: None) -> None:
    """Pay, SIGKILL the actor, retry the same request with the same Idempotency-Key: the same order
    comes back (201), the hold reads confirmed, and no refund was recorded for its charge."""
    event = create_event(http, cluster, event_body(ga("floor", 20)))
    created = hold(http, cluster, "dot", {"event_id": event["id"], "section": "floor", "quantity": 2}).json()
    key = f"pay-{uuid.uuid4()}"
    first = checkout(http, cluster, "dot", created["id"], key)
    assert first.status_code == 201, first.text
    kill_shard_of(cluster, event["id"])
    deadline = time.monotonic() + READY_TIMEOUT_S
    retried = checkout(http, cluster, "dot", created["id"], key)
    while retried.status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.3)
        retried = checkout(http, cluster, "dot", created["id"], key)
    assert retried.status_code == 201, retried.text
    assert retried.json()["order"]["id"] == first.json()["order"]["id"]
    assert get_when_served(http, f"/v1/holds/{created['id']}", cluster.headers("dot")).json()["status"] == "confirmed"
    payments: list[Any] = asyncio.run(fetch(shard_dsn(cluster, event["id"]),
                                            "SELECT kind, status FROM payments WHERE hold_id = $1",
                                            uuid.UUID(created["id"])))
    assert [row["kind"] for row in payments] == ["charge"], payments
    assert payments[0]["status"] == "succeeded"
