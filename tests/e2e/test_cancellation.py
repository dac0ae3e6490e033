"""Cancelling an event over a real cluster (API.md "Organizers", router/cancellation.py).

Proves: `PATCH status: cancelled` stops everything at once — holds, checkouts, transfers and
check-ins (410 TICKET_VOID) — and is final (409 EVENT_CANCELLED); the saga then refunds every order
exactly once, whatever happened to it before (a transferred ticket, a checked-in ticket, a free
order, an order refunded earlier), which the event shows as `cancellation` progress; afterwards the
database has no live ticket, every paid order one succeeded refund of its whole amount, the
simulated gateway one refund per charge and never more than charged, every voided ticket on the
revocation list and a `ticket.cancelled` outbox row. And with the router SIGKILLed halfway
through a cancellation of 100 orders, the restarted cluster finishes it: every order refunded
once, no money paid twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import RunningCluster, down, running_cluster, start_cluster
from tests.support import check_database, create_event, event_body, fetch, ga, hold, problem, seated, shard_dsn

pytestmark = pytest.mark.e2e

PRICE_CENTS = 5000
WAIT_S = 60.0


def buy(http: httpx.Client, cluster: RunningCluster, event_id: str, user: str, target: dict[str, Any]
        ) -> dict[str, Any]:
    created = hold(http, cluster, user, {"event_id": event_id, **target})
    assert created.status_code == 201, created.text
    paid = http.post(f"/v1/holds/{created.json()['id']}/checkout", json={"payment": {"token": "tok_visa"}},
                     headers={**cluster.headers(user), "Idempotency-Key": f"pay-{uuid.uuid4()}"}, timeout=60)
    assert paid.status_code == 201, paid.text
    return dict(paid.json())


def cancel(http: httpx.Client, cluster: RunningCluster, event_id: str, organizer: str) -> dict[str, Any]:
    response = http.patch(f"/v1/events/{event_id}", json={"status": "cancelled"},
                          headers=cluster.headers(organizer, "organizer"))
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_cancelled(http: httpx.Client, event_id: str, orders: int) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        event = http.get(f"/v1/events/{event_id}").json()
        if event["cancellation"] == {"orders_total": orders, "orders_refunded": orders}:
            return dict(event)
        assert time.monotonic() < deadline, event["cancellation"]
        time.sleep(0.2)


def rows(cluster: RunningCluster, event_id: str, query: str) -> list[Any]:
    return asyncio.run(fetch(shard_dsn(cluster, event_id), query, uuid.UUID(event_id)))


def wait_paid(cluster: RunningCluster, event_id: str) -> None:
    """Until no refund of the event is still owed (the checkout resolver pays what a crash left)."""
    deadline = time.monotonic() + WAIT_S
    while rows(cluster, event_id, """SELECT 1 FROM payments WHERE event_id = $1 AND kind = 'refund'
                                     AND status = 'pending'"""):
        assert time.monotonic() < deadline, "refunds still owed"
        time.sleep(0.2)


def check_refunded_once(cluster: RunningCluster, event_id: str) -> dict[str, int]:
    """Every order refunded; every paid order one succeeded refund of its whole total, in our
    records and at the gateway; no live ticket left. Returns the ticket statuses' counts."""
    wait_paid(cluster, event_id)
    orders = rows(cluster, event_id, "SELECT order_id, status, total_cents FROM orders WHERE event_id = $1")
    assert {order["status"] for order in orders} == {"refunded"}
    refunds = rows(cluster, event_id, """SELECT order_id, amount_cents, status FROM payments
                                         WHERE event_id = $1 AND kind = 'refund'""")
    by_order: dict[Any, list[Any]] = {}
    for refund in refunds:
        by_order.setdefault(refund["order_id"], []).append(refund)
    for order in orders:
        if order["total_cents"] > 0:
            assert [(r["amount_cents"], r["status"]) for r in by_order[order["order_id"]]] == [
                (order["total_cents"], "succeeded")], order
        else:
            assert order["order_id"] not in by_order  # a free order owes nothing
    charges = rows(cluster, event_id, """SELECT gateway_ref, amount_cents FROM payments WHERE event_id = $1
                                         AND kind = 'charge' AND status = 'succeeded'""")
    with sqlite3.connect(cluster.data_dir / "gateway" / "gateway.sqlite3") as gateway:
        for charge in charges:
            refunded = gateway.execute("SELECT count(*), sum(amount_cents) FROM refunds WHERE charge_id = ?",
                                       (charge["gateway_ref"],)).fetchone()
            assert refunded == (1, charge["amount_cents"]), (charge["gateway_ref"], refunded)
    statuses = rows(cluster, event_id, "SELECT status, count(*) AS n FROM tickets WHERE event_id = $1 GROUP BY 1")
    counts = {row["status"]: int(row["n"]) for row in statuses}
    assert "valid" not in counts and "checked_in" not in counts, counts
    check_database(cluster, event_id)
    return counts


def test_cancellation_voids_and_refunds_every_order_once(http: httpx.Client, cluster: RunningCluster) -> None:
    organizer = f"cancel-org-{uuid.uuid4().hex[:8]}"
    event = create_event(http, cluster, event_body(
        ga("floor", 100, price_cents=PRICE_CENTS), ga("free", 10, price_cents=0), seated("A", [4, 4]),
        per_person_limit=None), organizer)
    event_id = event["id"]
    plain = [buy(http, cluster, event_id, f"cancel-buyer-{index}", {"section": "floor", "quantity": 2})
             for index in range(5)]
    seats = buy(http, cluster, event_id, "cancel-seats", {"seats": ["A-1-1", "A-1-2"]})
    gift = buy(http, cluster, event_id, "cancel-giver", {"section": "floor", "quantity": 2})
    given = http.post(f"/v1/tickets/{gift['tickets'][0]['id']}/transfer", json={"to": "cancel-friend"},
                      headers=cluster.headers("cancel-giver"))
    assert given.status_code == 201, given.text
    used = buy(http, cluster, event_id, "cancel-early", {"section": "floor", "quantity": 1})
    gate = cluster.headers(organizer, "organizer")
    admitted = http.post("/v1/checkins", json={"code": used["tickets"][0]["code"], "gate": "north"}, headers=gate)
    assert admitted.status_code == 200, admitted.text
    free = buy(http, cluster, event_id, "cancel-free", {"section": "free", "quantity": 1})
    earlier = buy(http, cluster, event_id, "cancel-refunded", {"section": "floor", "quantity": 1})
    refunded = http.post(f"/v1/orders/{earlier['order']['id']}/refund", headers=cluster.headers("cancel-refunded"))
    assert refunded.status_code == 200, refunded.text
    live = hold(http, cluster, "cancel-late", {"event_id": event_id, "section": "floor", "quantity": 1})
    assert live.status_code == 201, live.text
    orders_total = len(plain) + 5

    cancelled = cancel(http, cluster, event_id, organizer)
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancellation"]["orders_total"] == orders_total
    # Everything stops at the cancelling commit, before the saga reaches any order.
    problem(http.post("/v1/checkins", json={"code": plain[0]["tickets"][0]["code"], "gate": "north"},
                      headers=gate), 410, "TICKET_VOID")
    problem(http.post(f"/v1/tickets/{plain[1]['tickets'][0]['id']}/transfer", json={"to": "someone"},
                      headers=cluster.headers("cancel-buyer-1")), 410, "TICKET_VOID")
    problem(hold(http, cluster, "cancel-new", {"event_id": event_id, "section": "floor", "quantity": 1}),
            403, "SALE_NOT_OPEN")
    problem(http.post(f"/v1/holds/{live.json()['id']}/checkout", json={"payment": {"token": "tok_visa"}},
                      headers={**cluster.headers("cancel-late"), "Idempotency-Key": "late-pay"}),
            409, "EVENT_CANCELLED")
    for status in ("on_sale", "paused"):  # final
        problem(http.patch(f"/v1/events/{event_id}", json={"status": status}, headers=gate), 409, "EVENT_CANCELLED")

    done = wait_cancelled(http, event_id, orders_total)
    assert done["status"] == "cancelled"
    counts = check_refunded_once(cluster, event_id)
    # 5×2 plain + 2 seats + 1 kept by the giver + the friend's + 1 checked in + 1 free; the gift's
    # first ticket is `transferred`, the earlier order's `refunded`.
    assert counts == {"cancelled": 16, "transferred": 1, "refunded": 1}, counts
    friend = http.get("/v1/me/tickets", params={"event_id": event_id}, headers=cluster.headers("cancel-friend"))
    assert [ticket["status"] for ticket in friend.json()["items"]] == ["cancelled"]
    order = http.get(f"/v1/orders/{seats['order']['id']}", headers=cluster.headers("cancel-seats")).json()
    assert order["status"] == "refunded" and {t["status"] for t in order["tickets"]} == {"cancelled"}
    problem(http.post("/v1/checkins", json={"code": free["tickets"][0]["code"], "gate": "north"}, headers=gate),
            410, "TICKET_VOID")
    # Offline scanners learn every voided ticket; webhooks and e-mail every cancelled one.
    revoked = http.get(f"/v1/events/{event_id}/revocations", params={"limit": 100}, headers=gate).json()
    assert sum(item["status"] == "cancelled" for item in revoked["items"]) == 16
    outbox = rows(cluster, event_id, """SELECT topic, count(*) AS n FROM outbox WHERE event_id = $1
                                        AND topic IN ('ticket.cancelled', 'event.cancelled') GROUP BY 1""")
    assert {row["topic"]: row["n"] for row in outbox} == {"ticket.cancelled": 16, "event.cancelled": 1}
    # The saga acted as the system; the organizer's PATCH is theirs.
    audit = rows(cluster, event_id, """SELECT actor, actor_role FROM audit_log WHERE event_id = $1
                                       AND entity = 'order' AND to_status = 'refunded'""")
    assert {(row["actor"], row["actor_role"]) for row in audit} >= {("system", "system")}


def test_a_buyer_cannot_refund_a_cancelled_events_order_by_hand(http: httpx.Client, cluster: RunningCluster) -> None:
    """Only the cancellation refunds a cancelled event (its whole order); the buyer's own refund,
    which would pay back only the tickets they still hold, is refused."""
    organizer = f"cancel-org-{uuid.uuid4().hex[:8]}"
    event = create_event(http, cluster, event_body(ga("floor", 10, price_cents=PRICE_CENTS)), organizer)
    # The saga may take the order first (ORDER_ALREADY_REFUNDED): either way, not the buyer's refund.
    bought = buy(http, cluster, event["id"], "cancel-hand", {"section": "floor", "quantity": 1})
    cancel(http, cluster, event["id"], organizer)
    response = http.post(f"/v1/orders/{bought['order']['id']}/refund", headers=cluster.headers("cancel-hand"))
    assert response.status_code == 409 and response.json()["code"] in ("EVENT_CANCELLED", "ORDER_ALREADY_REFUNDED")
    wait_cancelled(http, event["id"], 1)
    check_refunded_once(cluster, event["id"])


# --- the router killed halfway ----------------------------------------------------------------------

KILL_ORDERS = 100
# Slow enough that the kill lands halfway: 100 refunds at 10/s take ~10 s.
SLOW_SAGA = {"TICKETING_CANCELLATION_REFUNDS_PER_S": "10", "TICKETING_CANCELLATION_INTERVAL_S": "0.5",
             "TICKETING_CANCELLATION_REFUNDS_IN_FLIGHT_MAX": "2"}


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    if os.environ.get("TICKETING_PG_DSNS"):
        pytest.skip("restarts a cluster of its own: needs the embedded services (external databases are shared)")
    with running_cluster(tmp_path / "data", environment=SLOW_SAGA) as running:
        yield running


def test_cancellation_resumes_after_the_router_is_killed_halfway(own_cluster: RunningCluster) -> None:
    cluster = own_cluster
    organizer = "kill-org"
    with httpx.Client(base_url=cluster.base_url, timeout=30) as http:
        event_id = create_event(http, cluster, event_body(ga("floor", 2 * KILL_ORDERS, price_cents=PRICE_CENTS),
                                                          per_person_limit=None), organizer)["id"]
        for index in range(KILL_ORDERS):
            buy(http, cluster, event_id, f"kill-buyer-{index}", {"section": "floor", "quantity": 1 + index % 2})
        cancel(http, cluster, event_id, organizer)
    deadline = time.monotonic() + WAIT_S
    while len(rows(cluster, event_id, "SELECT 1 FROM orders WHERE event_id = $1 AND status = 'refunded'")) < 20:
        assert time.monotonic() < deadline, "the cancellation did not start"
        time.sleep(0.05)
    killed_at = datetime.now(UTC)
    os.killpg(int(cluster.state()["router_pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    cluster.process.wait(120)  # the supervisor stops the rest when its router dies
    down(cluster.data_dir)

    restarted = start_cluster(cluster.data_dir, environment=SLOW_SAGA, port=cluster.port)
    try:
        restarted.wait_ready()
        with httpx.Client(base_url=restarted.base_url, timeout=30) as http:
            wait_cancelled(http, event_id, KILL_ORDERS)
        counts = check_refunded_once(restarted, event_id)
        assert counts == {"cancelled": KILL_ORDERS + KILL_ORDERS // 2}, counts
        refunded_at = [row["updated_at"] for row in rows(restarted, event_id,
                                                          "SELECT updated_at FROM orders WHERE event_id = $1")]
        # Halfway indeed: some orders were refunded before the kill, the rest after the restart.
        assert 20 <= sum(at < killed_at for at in refunded_at) < KILL_ORDERS, refunded_at
    finally:
        restarted.stop()
