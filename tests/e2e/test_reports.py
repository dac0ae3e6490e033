"""Organizers' sales report and CSV exports over a real cluster (docs/organizers.md).

Proves: after holds, checkouts, a release, a refund and a check-in, `GET /v1/events/{id}/sales`
equals what the shard's database says (orders, revenue, refunds, hold conversion, and per section
sold, held, available, revenue, refunded, checked in) and what availability says; the orders and
attendees CSVs are streamed `text/csv; charset=utf-8`, parse with the `csv` module, have one row per
order and per live ticket of the database, across several cursor batches, and round-trip a holder
name with commas, quotes, a line break and non-ASCII text, while one that a spreadsheet would run as
a formula comes back defused; the owner and admins may read them, another organizer gets 404, and
buyers and validators 403.
"""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from typing import Any

import httpx
import pytest

from cluster.settings import Settings
from tests.harness import RunningCluster
from tests.support import create_event, event_body, fetch, ga, hold, problem, seated, shard_dsn

pytestmark = pytest.mark.e2e

TRICKY_NAME = 'Doe, "Jay"\nJr. — Ærøskøbing 東京 🎟'
FORMULA_NAME = "=HYPERLINK(\"http://evil\",\"x\")"
GA_PRICE_CENTS, SEAT_PRICE_CENTS = 5000, 7500
# More attendees than one cursor batch, so that an export is several chunks.
BULK_ORDERS = Settings().export_batch_rows // 10 + 1
BULK_TICKETS_PER_ORDER = 10


def buy(http: httpx.Client, cluster: RunningCluster, event_id: str, user: str, target: dict[str, Any],
        holders: list[dict[str, str]] | None = None) -> dict[str, Any]:
    created = hold(http, cluster, user, {"event_id": event_id, **target})
    assert created.status_code == 201, created.text
    body: dict[str, Any] = {"payment": {"token": "tok_visa"}, **({"holders": holders} if holders else {})}
    paid = http.post(f"/v1/holds/{created.json()['id']}/checkout", json=body,
                     headers={**cluster.headers(user), "Idempotency-Key": f"pay-{uuid.uuid4()}"}, timeout=60)
    assert paid.status_code == 201, paid.text
    return dict(paid.json())


@pytest.fixture(scope="module")
def sold(http: httpx.Client, cluster: RunningCluster) -> dict[str, Any]:
    """An event with every kind of outcome: paid GA and seats, a live hold, a released hold, a
    refunded order, a checked-in ticket, and enough GA orders for several export batches."""
    organizer = f"report-org-{uuid.uuid4().hex[:8]}"
    event = create_event(http, cluster, event_body(
        ga("floor", 2000, price_cents=GA_PRICE_CENTS), seated("A", [5, 5], price_cents=SEAT_PRICE_CENTS,
                                                              blocked=["A-2-5"]),
        per_person_limit=None), organizer)
    event_id = event["id"]
    named = buy(http, cluster, event_id, "rep-ana", {"section": "floor", "quantity": 2},
                [{"name": TRICKY_NAME, "email": "ana@example.com"}, {"name": FORMULA_NAME, "email": "x@example.com"}])
    seats = buy(http, cluster, event_id, "rep-ben", {"seats": ["A-1-1", "A-1-2"]})
    refunded = buy(http, cluster, event_id, "rep-cy", {"section": "floor", "quantity": 1})
    response = http.post(f"/v1/orders/{refunded['order']['id']}/refund", headers=cluster.headers("rep-cy"))
    assert response.status_code == 200, response.text
    held = hold(http, cluster, "rep-dee", {"event_id": event_id, "seats": ["A-2-1", "A-2-2"]})
    assert held.status_code == 201, held.text
    released = hold(http, cluster, "rep-eve", {"event_id": event_id, "section": "floor", "quantity": 3})
    assert released.status_code == 201, released.text
    response = http.delete(f"/v1/holds/{released.json()['id']}", headers=cluster.headers("rep-eve"))
    assert response.status_code == 200, response.text
    response = http.post("/v1/checkins", json={"code": seats["tickets"][0]["code"], "gate": "north"},
                         headers=cluster.headers(organizer, "organizer"))
    assert response.status_code == 200, response.text
    for index in range(BULK_ORDERS):
        buy(http, cluster, event_id, f"rep-bulk-{index}", {"section": "floor", "quantity": BULK_TICKETS_PER_ORDER})
    return {"event": event, "organizer": organizer, "named": named, "seats": seats}


def database(cluster: RunningCluster, event_id: str, query: str) -> list[Any]:
    return asyncio.run(fetch(shard_dsn(cluster, event_id), query, uuid.UUID(event_id)))


def test_sales_report_matches_the_database(http: httpx.Client, cluster: RunningCluster, sold: dict[str, Any]) -> None:
    """Every figure of the report, recomputed from the shard's tables, and held/sold/available as
    availability shows them."""
    event_id = sold["event"]["id"]
    response = http.get(f"/v1/events/{event_id}/sales", headers=cluster.headers(sold["organizer"], "organizer"))
    assert response.status_code == 200, response.text
    report = response.json()
    orders = database(cluster, event_id, "SELECT status, total_cents FROM orders WHERE event_id = $1")
    confirmed = [row["total_cents"] for row in orders if row["status"] == "confirmed"]
    refunded = [row["total_cents"] for row in orders if row["status"] == "refunded"]
    assert (report["orders"], report["revenue_cents"]) == (len(confirmed), sum(confirmed))
    assert (report["orders_refunded"], report["refunded_cents"]) == (len(refunded), sum(refunded))
    assert refunded == [GA_PRICE_CENTS]
    holds = database(cluster, event_id, "SELECT status FROM holds WHERE event_id = $1")
    decided = [row["status"] for row in holds if row["status"] in ("confirmed", "expired", "released", "failed")]
    assert report["hold_conversion"] == round(decided.count("confirmed") / len(decided), 4)
    assert 0 < report["hold_conversion"] < 1
    # A ticket admitted at a gate is `valid` with a check-in row (shards/loader.py TICKET_STATUS_SQL).
    tickets = database(cluster, event_id, """SELECT t.section_id, CASE WHEN c.ticket_id IS NOT NULL
                                                  AND t.status = 'valid' THEN 'checked_in' ELSE t.status END AS status
                                               FROM tickets t LEFT JOIN checkins c USING (ticket_id)
                                              WHERE t.event_id = $1""")
    sections = {section["id"]: section for section in report["sections"]}
    for section_id, price_cents in (("floor", GA_PRICE_CENTS), ("A", SEAT_PRICE_CENTS)):
        live = [row for row in tickets if row["section_id"] == section_id and row["status"] in ("valid", "checked_in")]
        section = sections[section_id]
        assert section["sold"] == len(live) and section["revenue_cents"] == len(live) * price_cents
        assert section["checked_in"] == sum(row["status"] == "checked_in" for row in live)
        assert section["refunded"] == sum(row["section_id"] == section_id and row["status"] == "refunded"
                                          for row in tickets)
        assert section["refunded_cents"] == section["refunded"] * price_cents
    assert sum(section["revenue_cents"] for section in report["sections"]) == report["revenue_cents"]
    assert (sections["A"]["held"], sections["A"]["blocked"], sections["A"]["checked_in"]) == (2, 1, 1)
    claims = database(cluster, event_id, "SELECT state FROM seat_claims WHERE event_id = $1")
    assert sections["A"]["held"] == sum(row["state"] == "held" for row in claims)
    pools = database(cluster, event_id, "SELECT held, sold FROM ga_pools WHERE event_id = $1")
    assert (sections["floor"]["held"], sections["floor"]["sold"]) == (pools[0]["held"], pools[0]["sold"])
    availability = {section["id"]: section for section in http.get(f"/v1/events/{event_id}/availability").json()[
        "sections"]}
    for section_id, section in sections.items():
        for key in ("capacity", "sold", "held", "available", "blocked", "price_cents"):
            assert section[key] == availability[section_id][key], (section_id, key)


def parse(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "content-length" not in response.headers  # streamed (chunked), not rendered whole
    return list(csv.reader(io.StringIO(response.content.decode("utf-8"), newline="")))


def test_orders_csv_matches_the_database(http: httpx.Client, cluster: RunningCluster, sold: dict[str, Any]) -> None:
    """One row per order, oldest first, with the order's buyer, tickets, total and status."""
    event_id = sold["event"]["id"]
    rows = parse(http.get(f"/v1/events/{event_id}/orders.csv", headers=cluster.headers(sold["organizer"], "organizer")))
    header, body = rows[0], rows[1:]
    assert header == ["order_id", "created_at", "status", "buyer", "tickets", "total_cents", "currency", "refunded_at",
                      "payment_ref"]
    orders = database(cluster, event_id, """SELECT o.order_id, o.status, o.user_id, h.quantity, o.total_cents
                                             FROM orders o JOIN holds h USING (hold_id) WHERE o.event_id = $1
                                            ORDER BY o.created_at, o.order_id""")
    expected = [[str(row["order_id"]), row["status"], row["user_id"], str(row["quantity"]), str(row["total_cents"])]
                for row in orders]
    assert [[row[0], row[2], row[3], row[4], row[5]] for row in body] == expected
    assert all(row[6] == "EUR" and row[8] for row in body)
    assert [bool(row[7]) for row in body] == [row["status"] == "refunded" for row in orders]


def test_attendees_csv_matches_the_database_and_round_trips_names(http: httpx.Client, cluster: RunningCluster,
                                                                 sold: dict[str, Any]) -> None:
    """One row per live ticket, in more than one cursor batch; a hostile holder name survives the
    round trip, and a formula is defused with a leading quote."""
    event_id = sold["event"]["id"]
    rows = parse(http.get(f"/v1/events/{event_id}/attendees.csv",
                          headers=cluster.headers("report-admin", "admin")))
    header, body = rows[0], rows[1:]
    assert header == ["ticket_id", "order_id", "status", "section", "seat", "holder_name", "holder_email", "owner",
                      "issued_at", "checked_in_at", "gate"]
    live = database(cluster, event_id, """SELECT t.ticket_id, CASE WHEN c.ticket_id IS NOT NULL THEN 'checked_in'
                                                  ELSE t.status END AS status
                                             FROM tickets t LEFT JOIN checkins c USING (ticket_id)
                                            WHERE t.event_id = $1 AND t.status IN ('valid', 'checked_in')""")
    assert len(body) > Settings().export_batch_rows
    assert sorted((row[0], row[2]) for row in body) == sorted((str(row["ticket_id"]), row["status"]) for row in live)
    by_ticket = {row[0]: dict(zip(header, row, strict=True)) for row in body}
    named = [by_ticket[ticket["id"]] for ticket in sold["named"]["tickets"]]
    assert named[0]["holder_name"] == TRICKY_NAME and named[0]["holder_email"] == "ana@example.com"
    assert named[1]["holder_name"] == "'" + FORMULA_NAME
    seated_rows = [by_ticket[ticket["id"]] for ticket in sold["seats"]["tickets"]]
    assert [row["seat"] for row in seated_rows] == ["A-1-1", "A-1-2"]
    assert seated_rows[0]["gate"] == "north" and seated_rows[0]["checked_in_at"].endswith("Z")
    assert seated_rows[0]["status"] == "checked_in" and seated_rows[1]["status"] == "valid"
    sections = [row[3] for row in body]  # in the event's order, seats in order
    assert sections == sorted(sections, key=["floor", "A"].index)
    assert [row[4] for row in body if row[3] == "A"] == ["A-1-1", "A-1-2"]


def test_only_the_owner_and_admins_read_reports(http: httpx.Client, cluster: RunningCluster,
                                                sold: dict[str, Any]) -> None:
    """Another organizer: 404 as if the event did not exist; buyers and validators: 403; no token: 401."""
    event_id = sold["event"]["id"]
    for path in ("sales", "orders.csv", "attendees.csv"):
        url = f"/v1/events/{event_id}/{path}"
        problem(http.get(url, headers=cluster.headers("someone-else", "organizer")), 404, "EVENT_NOT_FOUND")
        problem(http.get(f"/v1/events/{uuid.uuid4()}/{path}", headers=cluster.headers(sold["organizer"], "organizer")),
                404, "EVENT_NOT_FOUND")
        problem(http.get(url, headers=cluster.headers("rep-ana")), 403, "FORBIDDEN")
        problem(http.get(url, headers=cluster.headers("gate", "validator", events=[event_id])), 403, "FORBIDDEN")
        problem(http.get(url), 401, "UNAUTHENTICATED")
        assert http.get(url, headers=cluster.headers("report-admin", "admin")).status_code == 200
