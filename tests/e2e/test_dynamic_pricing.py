"""Dynamic pricing over a real cluster (issue 15; docs/organizers.md "Dynamic pricing").

Acceptance: "prices move within bounds under simulated demand". Many buyers hold most of a
dynamic section: the price read from availability climbs by bounded steps to its demand target,
never above the ceiling; the holds released, it falls, never below the floor. A hold placed before
the climb is charged its own price at checkout, and its tickets keep it. Every move is in the
audit trail; the shard actor SIGKILLed at a plateau comes back at the committed price with every
live hold's locked price. The negative control: a fixed-price section beside it never moves.

The cluster runs the pricing timer every 0.5 s with steps of at most 20 % (tests/harness.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import RunningCluster
from tests.support import create_event, event_body, fetch, ga, hold, problem, seated, shard_dsn

pytestmark = pytest.mark.e2e

FLOOR, START, CEILING = 1_000, 1_000, 3_000
CAPACITY = 20
STEP_PERCENT = 20  # TICKETING_PRICING_STEP_MAX_PERCENT in tests/harness.py
FIXED = 1_500
SEATED_START = 1_500
MOVE_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 120.0
DYNAMIC = {"mode": "dynamic", "floor_cents": FLOOR, "ceiling_cents": CEILING}


def prices(http: httpx.Client, event_id: str) -> dict[str, int]:
    response = http.get(f"/v1/events/{event_id}/availability")
    assert response.status_code == 200, response.text
    return {section["id"]: section["price_cents"] for section in response.json()["sections"]}


def watch(http: httpx.Client, event_id: str, section: str, until: int) -> list[int]:
    """The section's prices as availability shows them, every 0.1 s, until it reads `until`."""
    seen: list[int] = []
    deadline = time.monotonic() + MOVE_TIMEOUT_S
    while not seen or seen[-1] != until:
        assert time.monotonic() < deadline, f"{section} did not reach {until}: {seen[-20:]}"
        current = prices(http, event_id)
        assert current["fixed"] == FIXED, "a fixed price never moves"
        seen.append(current[section])
        time.sleep(0.1)
    return seen


def target(taken: int) -> int:
    return FLOOR + (CEILING - FLOOR) * taken // CAPACITY


def assert_bounded_steps(seen: list[int]) -> None:
    """Each observed move is at most one step of the rule (a poll may miss none: the timer moves
    once per 0.5 s and we read every 0.1 s; two moves between reads would show as one larger one,
    so allow two steps), and every price is within the bounds."""
    assert all(FLOOR <= price <= CEILING for price in seen)
    for before, after in itertools.pairwise(seen):
        one = max(1, before * STEP_PERCENT // 100)
        two = one + max(1, (before + one) * STEP_PERCENT // 100)
        assert abs(after - before) <= two, (before, after)


@pytest.fixture
def ray_connected(cluster: RunningCluster) -> Iterator[None]:
    """This process joined to the cluster's Ray, to find the shard actor's process. Not the session's
    `ray_driver`: an in-process router of another e2e test may have joined Ray already (and its
    `ray.init` may not run twice); if this fixture joins, it leaves again for later ones."""
    from cluster.raycluster import NAMESPACE, prepare_local_ray_environment

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        yield
        return
    if "ray" not in sys.modules:
        prepare_local_ray_environment()  # before the first `import ray` (auth off, as the cluster's)
    import ray

    ray.init(address=str(cluster.state()["ray_address"]), namespace=NAMESPACE, logging_level="ERROR",
             log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def shard_pid(event_id: str) -> int:
    """The process id of the event's shard actor (waits for a restarting one to answer)."""
    import ray

    from cluster.raycluster import NAMESPACE, actor_name
    from cluster.settings import Settings

    shard_id = Settings(shard_count=4).shard_map().shard_of(uuid.UUID(event_id))
    actor = ray.get_actor(actor_name(shard_id), namespace=NAMESPACE)
    return int(ray.get(actor.health.remote(), timeout=READY_TIMEOUT_S)["pid"])


def get_when_served(http: httpx.Client, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        response = http.get(path, headers=headers or {})
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.3)


def checkout(http: httpx.Client, cluster: RunningCluster, user: str, hold_id: str) -> dict[str, Any]:
    paid = http.post(f"/v1/holds/{hold_id}/checkout", json={"payment": {"token": "tok_visa"}},
                     headers={**cluster.headers(user), "Idempotency-Key": f"pay-{uuid.uuid4()}"}, timeout=60)
    assert paid.status_code == 201, paid.text
    return dict(paid.json())


def test_hostile_pricing_is_refused_with_422(http: httpx.Client, cluster: RunningCluster) -> None:
    for pricing in ({"mode": "dynamic", "floor_cents": 0, "ceiling_cents": 10**30},
                    {"mode": "dynamic", "floor_cents": 2_000, "ceiling_cents": 3_000},  # price below the floor
                    {"mode": "dynamic", "floor_cents": 3_000, "ceiling_cents": 1_000}):
        body = event_body({**ga("dyn", 10, START), "pricing": pricing})
        response = http.post("/v1/events", json=body, headers=cluster.headers("organizer-1", "organizer"))
        problem(response, 422, "VALIDATION_ERROR")


def test_prices_move_within_bounds_under_simulated_demand(
        http: httpx.Client, cluster: RunningCluster, ray_connected: None) -> None:
    organizer = f"pricing-org-{uuid.uuid4().hex[:8]}"
    owner = cluster.headers(organizer, "organizer")
    event = create_event(http, cluster, event_body(
        {**ga("dyn", CAPACITY, START), "pricing": DYNAMIC},
        # Both dynamic sections start at their floor, the no-demand target: no move before the holds.
        {**seated("S", [5, 5], SEATED_START), "pricing": {"mode": "dynamic", "floor_cents": SEATED_START,
                                                          "ceiling_cents": 4_000}},
        ga("fixed", CAPACITY, FIXED), per_person_limit=None), organizer)
    event_id = event["id"]
    dsn = shard_dsn(cluster, event_id)
    assert event["sections"][0]["pricing"] == DYNAMIC and "pricing" not in event["sections"][2]
    assert prices(http, event_id) == {"dyn": START, "S": SEATED_START, "fixed": FIXED}

    # A buyer holds before the demand; the seated section's early hold likewise.
    early = hold(http, cluster, "early", {"event_id": event_id, "section": "dyn", "quantity": 2})
    early_seats = hold(http, cluster, "early", {"event_id": event_id, "seats": ["S-1-1"]})
    assert early.status_code == early_seats.status_code == 201, early.text
    assert early.json()["total_cents"] == 2 * START and early_seats.json()["total_cents"] == SEATED_START

    # Demand: 14 more buyers hold one each (16 of 20 taken), and the fixed section sells out too.
    demand = []
    for n in range(14):
        created = hold(http, cluster, f"buyer-{n}", {"event_id": event_id, "section": "dyn", "quantity": 1})
        assert created.status_code == 201, created.text
        demand.append((f"buyer-{n}", created.json()["id"]))
    fixed_hold = hold(http, cluster, "fan", {"event_id": event_id, "section": "fixed", "quantity": CAPACITY // 2})
    assert fixed_hold.status_code == 201, fixed_hold.text
    plateau = target(16)
    rising = watch(http, event_id, "dyn", plateau)
    assert_bounded_steps(rising)
    assert rising == sorted(rising) and len(set(rising)) > 2, "it climbs in steps while demand holds"

    # The early hold is charged the price it was created with, and its tickets keep it.
    assert http.get(f"/v1/holds/{early.json()['id']}", headers=cluster.headers("early")).json()["total_cents"] \
        == 2 * START
    paid = checkout(http, cluster, "early", early.json()["id"])
    order = paid["order"]
    assert order["total_cents"] == 2 * START and {t["price_cents"] for t in paid["tickets"]} == {START}
    charged = asyncio.run(fetch(dsn, "SELECT amount_cents FROM payments WHERE hold_id = $1 AND kind = 'charge' "
                                     "AND status = 'succeeded'", uuid.UUID(early.json()["id"])))
    assert [row["amount_cents"] for row in charged] == [2 * START]
    # A hold placed now pays today's price; with it 17 of 20 are taken, and the price moves on.
    late = hold(http, cluster, "late", {"event_id": event_id, "section": "dyn", "quantity": 1})
    assert late.status_code == 201 and late.json()["total_cents"] == plateau
    assert_bounded_steps(watch(http, event_id, "dyn", target(17)))

    # The actor killed at the new plateau: the committed price and every locked price come back.
    kill_and_check_prices_kept(http, cluster, event_id, {
        ("early", early_seats.json()["id"]): SEATED_START, ("late", late.json()["id"]): plateau}, order["id"])

    # No demand: the buyers release their holds; the price falls toward the 3 sold units' target,
    # never below the floor.
    for user, hold_id in [*demand, ("late", late.json()["id"])]:
        released = http.delete(f"/v1/holds/{hold_id}", headers=cluster.headers(user))
        assert released.status_code == 200, released.text
    falling = watch(http, event_id, "dyn", target(2))
    assert_bounded_steps(falling)
    assert falling == sorted(falling, reverse=True)
    # The seated section has one seat of ten held: its price rose to that target, 1,750, no further.
    assert prices(http, event_id)["S"] == 1_750

    check_audit_and_report(http, owner, event_id)
    refund_returns_the_price_paid(http, cluster, event_id, order["id"])


def kill_and_check_prices_kept(http: httpx.Client, cluster: RunningCluster, event_id: str,
                               holds: dict[tuple[str, str], int], order_id: str) -> None:
    """SIGKILL the shard actor at a price plateau: after Ray restarts it and recovery rebuilds it,
    availability and the event document show the committed price, each live hold its own total,
    the order its total."""
    (stored,) = asyncio.run(fetch(shard_dsn(cluster, event_id),
                                  "SELECT price_cents FROM sections WHERE event_id = $1 AND section_id = 'dyn'",
                                  uuid.UUID(event_id)))
    assert stored["price_cents"] == target(17)
    killed = shard_pid(event_id)
    os.kill(killed, signal.SIGKILL)  # Ray restarts the actor; recovery rebuilds it from Postgres
    after = get_when_served(http, f"/v1/events/{event_id}/availability")
    assert after.status_code == 200, after.text
    assert shard_pid(event_id) != killed, "the actor really restarted"
    assert {s["id"]: s["price_cents"] for s in after.json()["sections"]}["dyn"] == target(17)
    for (user, hold_id), total_cents in holds.items():
        view = get_when_served(http, f"/v1/holds/{hold_id}", cluster.headers(user)).json()
        assert view["total_cents"] == total_cents and view["items"][0]["price_cents"] == total_cents
    kept = get_when_served(http, f"/v1/orders/{order_id}", cluster.headers("early"))
    assert kept.json()["total_cents"] == 2 * START
    document = http.get(f"/v1/events/{event_id}").json()
    assert {s["id"]: s["price_cents"] for s in document["sections"]}["dyn"] == target(17)


def check_audit_and_report(http: httpx.Client, owner: dict[str, str], event_id: str) -> None:
    """Every move is audited (system actor, from → to in cents, within bounds, one step each), the
    fixed section never; the report's section revenue is the tickets' prices as sold."""
    entries = audit_entries(http, owner, event_id)
    moves = [e for e in entries if e["action"] == "section.price_changed"]
    dyn_moves = [(e["from"], e["to"]) for e in moves if e["detail"]["section"] == "dyn"]
    assert dyn_moves and dyn_moves[0][0] == START and dyn_moves[-1][1] == target(2)
    assert all(e["actor"] == {"sub": "system", "role": None} and e["subject"]["id"] == event_id for e in moves)
    for before, after_cents in dyn_moves:
        assert FLOOR <= after_cents <= CEILING and abs(after_cents - before) <= max(1, before * STEP_PERCENT // 100)
    assert max(to for _, to in dyn_moves) == target(17)
    assert not [e for e in moves if e["detail"]["section"] == "fixed"], "the fixed price never moved"
    report = http.get(f"/v1/events/{event_id}/sales", headers=owner).json()
    dyn = next(s for s in report["sections"] if s["id"] == "dyn")
    assert dyn["revenue_cents"] == 2 * START and dyn["price_cents"] == target(2)


def refund_returns_the_price_paid(http: httpx.Client, cluster: RunningCluster, event_id: str,
                                  order_id: str) -> None:
    """The early order, refunded after its section's price moved: the buyer gets back what was
    paid (the tickets' locked prices), not the tickets at today's price."""
    assert prices(http, event_id)["dyn"] != START
    refunded = http.post(f"/v1/orders/{order_id}/refund", headers=cluster.headers("early"))
    assert refunded.status_code == 200, refunded.text
    assert refunded.json()["total_cents"] == 2 * START
    assert {t["price_cents"] for t in refunded.json()["tickets"]} == {START}
    rows = asyncio.run(fetch(shard_dsn(cluster, event_id),
                             "SELECT amount_cents, status FROM payments WHERE order_id = $1 AND kind = 'refund'",
                             uuid.UUID(order_id)))
    assert [(row["amount_cents"], row["status"]) for row in rows] == [(2 * START, "succeeded")]


def audit_entries(http: httpx.Client, headers: dict[str, str], event_id: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        response = http.get(f"/v1/events/{event_id}/audit",
                            params={"limit": 200, **({"cursor": cursor} if cursor else {})}, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        entries += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return entries
    raise AssertionError("the page chain did not end")


def test_a_waiting_room_longer_than_the_stock_raises_the_price_before_anything_is_held(
        http: httpx.Client, cluster: RunningCluster) -> None:
    """Twelve people wait for five units of a queue-mode event (admitted one a second): nothing is
    held or sold, so the share alone would keep the floor; the waiting room says full demand, and
    the price climbs by bounded steps to the ceiling. The fixed section beside it never moves."""
    organizer = f"org-queue-price-{uuid.uuid4().hex[:6]}"
    event_id = create_event(http, cluster, event_body(
        {**ga("dyn", 5, START), "pricing": DYNAMIC}, ga("fixed", 5, FIXED), per_person_limit=None,
        queue={"enabled": True, "admit_per_second": 1, "token_seconds": 600}), organizer)["id"]
    for n in range(12):
        joined = http.post(f"/v1/events/{event_id}/queue", headers=cluster.headers(f"queue-price-{n}"))
        assert joined.status_code == 200, joined.text
    climbing = watch(http, event_id, "dyn", CEILING)
    assert_bounded_steps(climbing)
    sections = {s["id"]: s for s in http.get(f"/v1/events/{event_id}/availability").json()["sections"]}
    assert sections["dyn"]["held"] == 0 and sections["dyn"]["sold"] == 0
