"""Many buyers racing over HTTP for few seats: never oversold, all-or-nothing, checked in the DB."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from tests.harness import RunningCluster
from tests.support import check_database, create_event, event_body, ga, race, seated

pytestmark = pytest.mark.e2e


def test_200_buyers_race_for_50_seats(http: httpx.Client, cluster: RunningCluster) -> None:
    """Explicit-seat and best-available holds mixed: 50 seats are held at most once each, every
    409 names exactly seats that others hold, and nothing is half-held."""
    event = create_event(http, cluster, event_body(seated("A", [10, 10, 10, 10, 10]), per_person_limit=10))
    requests = []
    for buyer in range(200):
        if buyer % 2:
            row, first = 1 + buyer % 5, 1 + (buyer * 3) % 9
            body = {"event_id": event["id"], "seats": [f"A-{row}-{first}", f"A-{row}-{first + 1}"]}
        else:
            body = {"event_id": event["id"], "section": "A", "quantity": 2, "best_available": True,
                    "adjacent": buyer % 4 == 0}
        requests.append((f"racer-{buyer}", "POST", "/v1/holds", body, {"Idempotency-Key": f"race-{buyer}"}))
    responses = asyncio.run(race(cluster, requests))

    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) <= {201, 409}, statuses
    held = [seat["seat"] for r in responses if r.status_code == 201 for seat in r.json()["items"]]
    assert len(held) == len(set(held)), "a seat was held twice"
    assert len(held) <= 50 and statuses[201] == len(held) // 2
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] in {"SEATS_UNAVAILABLE", "INSUFFICIENT_INVENTORY"}
            for seat in response.json().get("unavailable", []):
                assert seat in held, f"{seat} was reported unavailable but nobody holds it"

    counts = check_database(cluster, event["id"])
    assert counts["live_seats"] == len(held) == counts["claims"]
    availability = http.get(f"/v1/events/{event['id']}/availability").json()
    assert availability["sections"][0]["held"] == len(held)
    assert availability["sections"][0]["available"] == 50 - len(held)


def test_300_buyers_race_for_a_500_ticket_pool(http: httpx.Client, cluster: RunningCluster) -> None:
    """GA quantities 1..3 from 300 buyers (≈600 wanted, 500 exist): the pool is never oversold and
    the database counters equal the live holds."""
    event = create_event(http, cluster, event_body(ga("floor", 500)))
    requests = [(f"ga-{buyer}", "POST", "/v1/holds", {"event_id": event["id"], "section": "floor",
                                                     "quantity": 1 + buyer % 3}, {})
                for buyer in range(300)]
    responses = asyncio.run(race(cluster, requests))

    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) <= {201, 409}, statuses
    granted = sum(r.json()["quantity"] for r in responses if r.status_code == 201)
    assert granted <= 500
    assert 500 - granted < 3, "holds were refused while enough tickets were left"
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] == "INSUFFICIENT_INVENTORY"
            assert response.json()["available"] < 3
    counts = check_database(cluster, event["id"])
    assert counts["pools"]["floor"] == (granted, 0)
