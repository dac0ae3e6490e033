"""Helpers for tests that drive a running cluster over HTTP and then check its databases."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx

from tests.harness import RunningCluster

STARTS_AT = "2027-05-01T20:00:00Z"


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert a problem+json response with this status and code; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code and body["status"] == status
    return dict(body)


def event_body(*sections: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Test night", "category": "concert", "description": "",
        "venue": {"name": "Arena", "city": "Lisbon", "country": "PT"},
        "starts_at": STARTS_AT, "ends_at": "2027-05-01T23:00:00Z", "currency": "EUR",
        "hold_seconds": 600, "per_person_limit": 6,
        "sections": list(sections) or [ga("floor", 100)],
    }
    body.update(overrides)
    return body


def ga(section_id: str, capacity: int, price_cents: int = 9900) -> dict[str, Any]:
    return {"id": section_id, "name": section_id.title(), "kind": "ga", "capacity": capacity,
            "price_cents": price_cents}


def seated(section_id: str, rows: list[int], price_cents: int = 14900, **extra: Any) -> dict[str, Any]:
    return {"id": section_id, "name": f"Block {section_id}", "kind": "seated", "price_cents": price_cents,
            "rows": [{"label": str(index + 1), "seats": seats} for index, seats in enumerate(rows)], **extra}


def create_event(http: httpx.Client, cluster: RunningCluster, body: dict[str, Any],
                 organizer: str = "organizer-1") -> dict[str, Any]:
    response = http.post("/v1/events", json=body, headers=cluster.headers(organizer, "organizer"))
    assert response.status_code == 201, response.text
    return dict(response.json())


def hold(http: httpx.Client, cluster: RunningCluster, user: str, body: dict[str, Any],
         key: str | None = None) -> httpx.Response:
    headers = cluster.headers(user)
    if key is not None:
        headers["Idempotency-Key"] = key
    return http.post("/v1/holds", json=body, headers=headers)


async def race(cluster: RunningCluster, requests: list[tuple[str, str, str, dict[str, Any] | None, dict[str, str]]],
               concurrency: int = 200) -> list[httpx.Response]:
    """Send (user, method, path, json, extra headers) requests all at once from many connections."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=60, limits=limits) as client:
        start = asyncio.Event()

        async def one(user: str, method: str, path: str, body: dict[str, Any] | None,
                      headers: dict[str, str]) -> httpx.Response:
            await start.wait()
            return await client.request(method, path, json=body, headers={**cluster.headers(user), **headers})

        tasks = [asyncio.create_task(one(*request)) for request in requests]
        await asyncio.sleep(0.1)
        start.set()
        return list(await asyncio.gather(*tasks))


def shard_dsn(cluster: RunningCluster, event_id: str) -> str:
    from cluster.settings import Settings

    shard_id = Settings(shard_count=4).shard_map().shard_of(uuid.UUID(event_id))
    return str(cluster.state()["pg_dsns"][shard_id])  # type: ignore[index]


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


def check_database(cluster: RunningCluster, event_id: str) -> dict[str, Any]:
    """Check the event's rows against each other; returns the counts for further assertions.

    These are the database-side invariants: a seat is claimed at most once (primary key), each
    live seat hold owns exactly its claims, each GA pool's counters equal its live holds and live
    tickets, every sold seat has exactly one live ticket, and no seat has two.
    """
    dsn = shard_dsn(cluster, event_id)
    eid = uuid.UUID(event_id)

    async def gather() -> dict[str, Any]:
        pools = await fetch(dsn, "SELECT section_id, capacity, held, sold FROM ga_pools WHERE event_id = $1", eid)
        live_ga = await fetch(dsn, """SELECT section_id, sum(quantity) AS q FROM holds WHERE event_id = $1
                                      AND kind = 'ga' AND status IN ('held', 'payment_pending') GROUP BY 1""", eid)
        ga_tickets = await fetch(dsn, """SELECT section_id, count(*) AS n FROM tickets WHERE event_id = $1
                                         AND seat_no IS NULL AND status IN ('valid', 'checked_in') GROUP BY 1""", eid)
        claims = await fetch(dsn, "SELECT seat_no, hold_id, state FROM seat_claims WHERE event_id = $1", eid)
        seat_holds = await fetch(dsn, """SELECT hold_id, seat_nos, status FROM holds WHERE event_id = $1
                                         AND kind <> 'ga'""", eid)
        seat_tickets = await fetch(dsn, """SELECT seat_no, count(*) AS n FROM tickets WHERE event_id = $1
                                           AND seat_no IS NOT NULL AND status IN ('valid', 'checked_in')
                                           GROUP BY 1""", eid)
        return {"pools": pools, "live_ga": live_ga, "ga_tickets": ga_tickets, "claims": claims,
                "seat_holds": seat_holds, "seat_tickets": seat_tickets}

    rows = asyncio.run(gather())
    held_by_pool = {row["section_id"]: int(row["q"]) for row in rows["live_ga"]}
    tickets_by_pool = {row["section_id"]: int(row["n"]) for row in rows["ga_tickets"]}
    for pool in rows["pools"]:
        assert pool["held"] == held_by_pool.get(pool["section_id"], 0), pool
        assert pool["sold"] == tickets_by_pool.get(pool["section_id"], 0), pool
        assert pool["held"] + pool["sold"] <= pool["capacity"], pool
    claims = {row["seat_no"]: row for row in rows["claims"]}
    live_seats: dict[int, uuid.UUID] = {}
    for seat_hold in rows["seat_holds"]:
        if seat_hold["status"] in ("held", "payment_pending"):
            for seat_no in seat_hold["seat_nos"]:
                assert seat_no not in live_seats, f"seat {seat_no} in two live holds"
                live_seats[seat_no] = seat_hold["hold_id"]
                assert claims[seat_no]["hold_id"] == seat_hold["hold_id"] and claims[seat_no]["state"] == "held"
    tickets_per_seat = {row["seat_no"]: int(row["n"]) for row in rows["seat_tickets"]}
    assert all(count == 1 for count in tickets_per_seat.values()), "a seat has two live tickets"
    sold = {seat_no for seat_no, claim in claims.items() if claim["state"] == "sold"}
    assert sold == set(tickets_per_seat), "sold seats and ticketed seats differ"
    assert set(claims) == set(live_seats) | sold, "a claim without a live hold or a ticket"
    return {"claims": len(claims), "live_seats": len(live_seats), "sold_seats": len(sold),
            "pools": {row["section_id"]: (row["held"], row["sold"]) for row in rows["pools"]}}


def listing_pages(http: httpx.Client, limit: int, headers: dict[str, str] | None = None,
                  **params: str) -> list[dict[str, Any]]:
    """Every item of `GET /v1/events` with `params`, following next_cursor with pages of `limit`."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(200):
        query = {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        response = http.get("/v1/events", params=query, headers=headers or {})
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the listing never ended")
