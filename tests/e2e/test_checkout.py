"""Checkout, tickets with signed QR codes, check-in, refunds and transfers over HTTP (issue 6).

Money is checked at the simulated gateway (its own durable store, read here directly) and
inventory in the shard database: never charged without tickets, never tickets without a charge.
"""

from __future__ import annotations

import asyncio
import base64
import io
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import pytest

from router.checkout import charge_key, refund_key
from router.payments import SimulatedGateway
from router.ticketcodes import KeyRing, TicketClaims
from tests.harness import RunningCluster
from tests.support import check_database, create_event, event_body, fetch, ga, hold, problem, race, seated, shard_dsn

pytestmark = pytest.mark.e2e

RESOLVE_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def event(http: httpx.Client, cluster: RunningCluster) -> dict[str, Any]:
    return create_event(http, cluster, event_body(ga("floor", 200), seated("A", [20, 20]), per_person_limit=10))



def checkout(http: httpx.Client, cluster: RunningCluster, user: str, hold_id: str, token: str = "tok_visa",
             key: str | None = None, **extra_headers: str) -> httpx.Response:
    headers = {**cluster.headers(user), **extra_headers}
    if key:
        headers["Idempotency-Key"] = key
    return http.post(f"/v1/holds/{hold_id}/checkout", json={"payment": {"token": token}}, headers=headers,
                     timeout=60)


def bought(http: httpx.Client, cluster: RunningCluster, event: dict[str, Any], user: str,
           seats: list[str] | None = None, quantity: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"event_id": event["id"]}
    body.update({"seats": seats} if seats else {"section": "floor", "quantity": quantity})
    created = hold(http, cluster, user, body)
    assert created.status_code == 201, created.text
    paid = checkout(http, cluster, user, created.json()["id"], key=f"pay-{uuid.uuid4()}")
    assert paid.status_code == 201, paid.text
    return dict(paid.json())


def gateway(cluster: RunningCluster) -> SimulatedGateway:
    return SimulatedGateway(cluster.data_dir)


def test_checkout_issues_signed_tickets_with_scannable_qr(http: httpx.Client, cluster: RunningCluster,
                                                          event: dict[str, Any]) -> None:
    created = hold(http, cluster, "ana", {"event_id": event["id"], "seats": ["A-1-1", "A-1-2"]}).json()
    response = http.post(f"/v1/holds/{created['id']}/checkout", headers={**cluster.headers("ana"),
                                                                          "Idempotency-Key": "ana-pay"},
                         json={"payment": {"token": "tok_visa"},
                               "holders": [{"name": "Ana", "email": "ana@example.com"}]})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["order"]["status"] == "confirmed" and body["order"]["total_cents"] == 2 * 14900
    assert [t["seat"] for t in body["tickets"]] == ["A-1-1", "A-1-2"]
    assert body["tickets"][0]["holder"] == {"name": "Ana", "email": "ana@example.com"}
    ticket = body["tickets"][0]
    assert ticket["status"] == "valid" and ticket["code"].startswith("v1.")
    assert ticket["qr_png"] == f"/v1/tickets/{ticket['id']}/qr.png"

    again = http.post(f"/v1/holds/{created['id']}/checkout", headers={**cluster.headers("ana"),
                                                                       "Idempotency-Key": "ana-pay"},
                      json={"payment": {"token": "tok_visa"},
                            "holders": [{"name": "Ana", "email": "ana@example.com"}]})
    assert again.status_code == 201 and again.json()["order"]["id"] == body["order"]["id"]
    assert [t["code"] for t in again.json()["tickets"]] == [t["code"] for t in body["tickets"]]

    png = http.get(ticket["qr_png"], headers=cluster.headers("ana"))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    import zxingcpp
    from PIL import Image

    decoded = [result.text for result in zxingcpp.read_barcodes(Image.open(io.BytesIO(png.content)))]
    assert decoded == [ticket["code"]]
    keys = http.get("/v1/ticket-keys").json()["keys"]
    assert keys and keys[0]["alg"] == "Ed25519" and len(base64.urlsafe_b64decode(keys[0]["public_key"] + "=")) == 32
    claims = KeyRing.from_public_keys(keys).verify(decoded[0])
    assert str(claims.ticket_id) == ticket["id"] and str(claims.event_id) == event["id"] and claims.place == "A-1-1"
    svg = http.get(f"/v1/tickets/{ticket['id']}/qr.svg", headers=cluster.headers("ana"))
    assert svg.status_code == 200 and svg.content.startswith(b"<")

    verified = subprocess.run([sys.executable, "-m", "cluster.cli", "verify", decoded[0], "--keys",
                               f"{cluster.base_url}/v1/ticket-keys"], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and ticket["id"] in verified.stdout

    order = http.get(f"/v1/orders/{body['order']['id']}", headers=cluster.headers("ana")).json()
    assert order["status"] == "confirmed" and len(order["tickets"]) == 2
    problem(http.get(f"/v1/orders/{body['order']['id']}", headers=cluster.headers("eve")), 404, "ORDER_NOT_FOUND")
    problem(http.get(f"/v1/tickets/{ticket['id']}", headers=cluster.headers("eve")), 404, "TICKET_NOT_FOUND")
    mine = http.get("/v1/me/tickets", params={"event_id": event["id"]}, headers=cluster.headers("ana")).json()
    assert {t["id"] for t in mine["items"]} == {t["id"] for t in body["tickets"]}
    charge = asyncio.run(gateway(cluster).lookup(charge_key(uuid.UUID(created["id"]))))
    assert charge is not None and charge.status == "succeeded" and charge.amount_cents == 2 * 14900
    check_database(cluster, event["id"])


def test_decline_releases_the_hold(http: httpx.Client, cluster: RunningCluster, event: dict[str, Any]) -> None:
    created = hold(http, cluster, "dee", {"event_id": event["id"], "seats": ["A-2-1"]}).json()
    problem(checkout(http, cluster, "dee", created["id"], "tok_declined"), 402, "PAYMENT_DECLINED")
    assert http.get(f"/v1/holds/{created['id']}", headers=cluster.headers("dee")).json()["status"] == "failed"
    seats = http.get(f"/v1/events/{event['id']}/seats", params={"section": "A"}).json()
    assert seats["sections"][0]["rows"][1]["seats"][0] == "."
    check_database(cluster, event["id"])


def test_gateway_error_keeps_the_hold_and_retry_with_same_key_pays_once(
        http: httpx.Client, cluster: RunningCluster, event: dict[str, Any]) -> None:
    created = hold(http, cluster, "err", {"event_id": event["id"], "seats": ["A-2-2"]}).json()
    problem(checkout(http, cluster, "err", created["id"], "tok_error", key="err-pay"), 502, "PAYMENT_GATEWAY_ERROR")
    assert http.get(f"/v1/holds/{created['id']}", headers=cluster.headers("err")).json()["status"] == \
        "payment_pending"
    retried = checkout(http, cluster, "err", created["id"], "tok_error", key="err-pay")
    assert retried.status_code == 201, retried.text
    charges = asyncio.run(fetch(shard_dsn(cluster, event["id"]), "SELECT status FROM payments WHERE hold_id = $1",
                                uuid.UUID(created["id"])))
    assert [row["status"] for row in charges] == ["succeeded"]


def test_checkout_errors(http: httpx.Client, cluster: RunningCluster, event: dict[str, Any]) -> None:
    short = create_event(http, cluster, event_body(ga("floor", 5), hold_seconds=1))
    expiring = hold(http, cluster, "late", {"event_id": short["id"], "section": "floor", "quantity": 1}).json()
    time.sleep(1.5)
    problem(checkout(http, cluster, "late", expiring["id"]), 410, "HOLD_EXPIRED")
    released = hold(http, cluster, "rel", {"event_id": event["id"], "section": "floor", "quantity": 1}).json()
    http.delete(f"/v1/holds/{released['id']}", headers=cluster.headers("rel"))
    problem(checkout(http, cluster, "rel", released["id"]), 409, "HOLD_NOT_ACTIVE")
    problem(checkout(http, cluster, "someone-else", released["id"]), 404, "HOLD_NOT_FOUND")
    problem(checkout(http, cluster, "rel", str(uuid.uuid4())), 404, "HOLD_NOT_FOUND")
    bad = http.post(f"/v1/holds/{released['id']}/checkout", json={"payment": {}}, headers=cluster.headers("rel"))
    problem(bad, 422, "VALIDATION_ERROR")


def test_twenty_gates_admit_a_ticket_exactly_once(http: httpx.Client, cluster: RunningCluster,
                                                  event: dict[str, Any]) -> None:
    code = bought(http, cluster, event, "gatecrasher")["tickets"][0]["code"]
    requests = [("gate-staff", "POST", "/v1/checkins", {"code": code, "gate": f"gate-{n}"}, {}) for n in range(20)]
    # race() signs requests as buyers; check-in needs validators, so sign them here.
    validator = cluster.headers("gate-staff", "validator", events=[event["id"]])
    requests = [(user, method, path, body, validator) for user, method, path, body, _ in requests]
    responses = asyncio.run(race(cluster, requests))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [409] * 19, statuses
    admitted = next(r for r in responses if r.status_code == 200).json()
    assert admitted["result"] == "admitted"
    for response in responses:
        if response.status_code == 409:
            body = problem(response, 409, "TICKET_ALREADY_USED")
            assert body["gate"] == admitted["ticket"]["gate"] and body["first_checked_in_at"].endswith("Z")


def test_invalid_codes_are_422(http: httpx.Client, cluster: RunningCluster, event: dict[str, Any]) -> None:
    code = bought(http, cluster, event, "forger")["tickets"][0]["code"]
    validator = cluster.headers("gate-staff", "validator", events=[event["id"]])
    head, signature = code.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[5] ^= 0x01
    flipped = head + "." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    claims = KeyRing.load_or_create(cluster.data_dir).verify(code)
    import tempfile
    from pathlib import Path

    foreign = KeyRing.load_or_create(Path(tempfile.mkdtemp())).sign(TicketClaims(
        claims.ticket_id, claims.event_id, claims.place, claims.place_kind, claims.issued_at_s))
    for bad in (flipped, foreign, "garbage", "v1.x.y.z"):
        problem(http.post("/v1/checkins", json={"code": bad, "gate": "north"}, headers=validator),
                422, "TICKET_INVALID")
    problem(http.post("/v1/checkins", json={"code": code, "gate": "north"}, headers=cluster.headers("b")),
            403, "FORBIDDEN")


def test_refund_returns_money_and_inventory(http: httpx.Client, cluster: RunningCluster,
                                            event: dict[str, Any]) -> None:
    paid = bought(http, cluster, event, "refunder", seats=["A-2-10"])
    order_id = paid["order"]["id"]
    refunded = http.post(f"/v1/orders/{order_id}/refund", headers=cluster.headers("refunder"))
    assert refunded.status_code == 200, refunded.text
    assert refunded.json()["status"] == "refunded" and refunded.json()["tickets"][0]["status"] == "refunded"
    # Without a key the order is the key: asking again replays the first answer.
    replay = http.post(f"/v1/orders/{order_id}/refund", headers=cluster.headers("refunder"))
    assert replay.status_code == 200 and replay.json() == refunded.json()
    problem(http.post(f"/v1/orders/{order_id}/refund", headers={**cluster.headers("refunder"),
                                                                  "Idempotency-Key": "second-refund"}),
            409, "ORDER_ALREADY_REFUNDED")
    seats = http.get(f"/v1/events/{event['id']}/seats", params={"section": "A"}).json()
    assert seats["sections"][0]["rows"][1]["seats"][9] == "."
    validator = cluster.headers("gate-staff", "validator", events=[event["id"]])
    problem(http.post("/v1/checkins", json={"code": paid["tickets"][0]["code"], "gate": "n"}, headers=validator),
            410, "TICKET_VOID")
    revoked = http.get(f"/v1/events/{event['id']}/revocations", headers=validator).json()
    assert paid["tickets"][0]["id"] in {item["ticket_id"] for item in revoked["items"]}
    refunds = asyncio.run(fetch(shard_dsn(cluster, event["id"]),
                                "SELECT status FROM payments WHERE order_id = $1 AND kind = 'refund'",
                                uuid.UUID(order_id)))
    assert [row["status"] for row in refunds] == ["succeeded"]
    problem(http.post(f"/v1/orders/{order_id}/refund", headers=cluster.headers("eve")), 404, "ORDER_NOT_FOUND")
    check_database(cluster, event["id"])


def test_transfer_voids_old_code_and_gives_recipient_a_ticket(http: httpx.Client, cluster: RunningCluster,
                                                             event: dict[str, Any]) -> None:
    old = bought(http, cluster, event, "giver")["tickets"][0]
    moved = http.post(f"/v1/tickets/{old['id']}/transfer", json={"to": "receiver"},
                      headers={**cluster.headers("giver"), "Idempotency-Key": "give-1"})
    assert moved.status_code == 201, moved.text
    new = moved.json()
    assert new["id"] != old["id"] and new["code"] != old["code"] and new["status"] == "valid"
    mine = http.get("/v1/me/tickets", headers=cluster.headers("receiver")).json()["items"]
    assert new["id"] in {t["id"] for t in mine}
    assert http.get(f"/v1/tickets/{old['id']}", headers=cluster.headers("giver")).json()["status"] == "transferred"
    validator = cluster.headers("gate-staff", "validator", events=[event["id"]])
    problem(http.post("/v1/checkins", json={"code": old["code"], "gate": "n"}, headers=validator), 410, "TICKET_VOID")
    assert http.post("/v1/checkins", json={"code": new["code"], "gate": "n"}, headers=validator).status_code == 200
    problem(http.post(f"/v1/tickets/{old['id']}/transfer", json={"to": "third"}, headers=cluster.headers("giver")),
            410, "TICKET_VOID")


def wait_for_hold(http: httpx.Client, cluster: RunningCluster, user: str, hold_id: str, statuses: set[str]) -> str:
    deadline = time.monotonic() + RESOLVE_TIMEOUT_S
    status = ""
    while time.monotonic() < deadline:
        response = http.get(f"/v1/holds/{hold_id}", headers=cluster.headers(user))
        status = response.json().get("status", "") if response.status_code == 200 else ""
        if status in statuses:
            return status
        time.sleep(0.3)
    return status


def assert_money_matches_tickets(cluster: RunningCluster, event: dict[str, Any], hold_id: str) -> None:
    """Never charged without tickets, never tickets without a charge."""
    charge = asyncio.run(gateway(cluster).lookup(charge_key(uuid.UUID(hold_id))))
    rows = asyncio.run(fetch(shard_dsn(cluster, event["id"]),
                             """SELECT t.status FROM tickets t JOIN orders o USING (order_id)
                                WHERE o.hold_id = $1""", uuid.UUID(hold_id)))
    refunds = asyncio.run(fetch(shard_dsn(cluster, event["id"]),
                                "SELECT status FROM payments WHERE hold_id = $1 AND kind = 'refund'",
                                uuid.UUID(hold_id)))
    if rows:
        assert charge is not None and charge.status == "succeeded" and charge.refunded_cents == 0
    else:
        assert charge is None or charge.status != "succeeded" or charge.refunded_cents == charge.amount_cents
        assert charge is None or charge.status != "succeeded" or [r["status"] for r in refunds] == ["succeeded"]


def test_actor_killed_between_charge_and_confirm_then_client_retries(
        http: httpx.Client, cluster: RunningCluster, event: dict[str, Any]) -> None:
    created = hold(http, cluster, "killed", {"event_id": event["id"], "section": "floor", "quantity": 2}).json()
    hook = {"X-Test-Hook": "kill-shard-after-charge"}
    first = checkout(http, cluster, "killed", created["id"], key="kill-pay", **hook)
    assert first.status_code in (201, 503), first.text
    second = checkout(http, cluster, "killed", created["id"], key="kill-pay")
    assert second.status_code == 201, second.text
    assert len(second.json()["tickets"]) == 2
    assert_money_matches_tickets(cluster, event, created["id"])
    check_database(cluster, event["id"])


def test_nobody_confirms_after_charge_and_the_resolver_settles_it(
        http: httpx.Client, cluster: RunningCluster, event: dict[str, Any]) -> None:
    created = hold(http, cluster, "orphan", {"event_id": event["id"], "section": "floor", "quantity": 1}).json()
    hook = {"X-Test-Hook": "crash-after-charge"}
    crashed = checkout(http, cluster, "orphan", created["id"], key="orphan-pay", **hook)
    problem(crashed, 503, "SHARD_UNAVAILABLE")
    assert wait_for_hold(http, cluster, "orphan", created["id"], {"confirmed", "failed"}) == "confirmed"
    eventually(lambda: assert_money_matches_tickets(cluster, event, created["id"]))
    mine = http.get("/v1/me/tickets", params={"event_id": event["id"]}, headers=cluster.headers("orphan")).json()
    assert len(mine["items"]) == 1
    check_database(cluster, event["id"])


def test_payment_for_a_hold_that_can_no_longer_be_confirmed_is_refunded(
        http: httpx.Client, cluster: RunningCluster, event: dict[str, Any]) -> None:
    created = hold(http, cluster, "tooslow", {"event_id": event["id"], "section": "floor", "quantity": 1}).json()
    response = checkout(http, cluster, "tooslow", created["id"], key="slow-pay",
                        **{"X-Test-Hook": "fail-hold-after-charge"})
    assert response.status_code in (409, 410), response.text
    charge = asyncio.run(gateway(cluster).lookup(charge_key(uuid.UUID(created["id"]))))
    assert charge is not None and charge.refunded_cents == charge.amount_cents
    assert_money_matches_tickets(cluster, event, created["id"])
    assert refund_key(uuid.UUID(created["id"]))


def test_lost_gateway_reply_is_resolved_by_lookup(http: httpx.Client, cluster: RunningCluster,
                                                  event: dict[str, Any]) -> None:
    """tok_lost charges and then loses the answer: the client sees 502, the hold stays pinned, and
    without any retry the resolver settles it: normally it finds the charge and confirms; if the
    charge lands only after the resolver gave up on the hold (a slow gateway under load), the
    charge is refunded. Either way money and tickets agree."""
    created = hold(http, cluster, "lost", {"event_id": event["id"], "section": "floor", "quantity": 1}).json()
    problem(checkout(http, cluster, "lost", created["id"], "tok_lost", key="lost-pay"), 502, "PAYMENT_GATEWAY_ERROR")
    assert wait_for_hold(http, cluster, "lost", created["id"], {"confirmed", "failed"}) in {"confirmed", "failed"}
    eventually(lambda: assert_money_matches_tickets(cluster, event, created["id"]))


def eventually(check: Any, timeout_s: float = RESOLVE_TIMEOUT_S) -> None:
    """Retry an assertion until it holds (the resolver settles in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_charge_landing_after_the_hold_was_given_up_is_refunded(
        http: httpx.Client, cluster: RunningCluster, event: dict[str, Any]) -> None:
    """The router stops between pin and charge; the resolver finds no charge and fails the hold.
    Then the charge lands anyway (a provider finishing a timed-out request): the resolver's
    re-check refunds it. Never charged without tickets."""
    created = hold(http, cluster, "late", {"event_id": event["id"], "section": "floor", "quantity": 1}).json()
    hook = {"X-Test-Hook": "crash-before-charge"}
    problem(checkout(http, cluster, "late", created["id"], key="late-pay", **hook), 503, "SHARD_UNAVAILABLE")
    assert wait_for_hold(http, cluster, "late", created["id"], {"confirmed", "failed"}) == "failed"
    charge = asyncio.run(gateway(cluster).charge(amount_cents=created["total_cents"], currency="EUR",
                                                 token="tok_visa", idempotency_key=charge_key(uuid.UUID(created["id"])),
                                                 description="late"))
    assert charge.status == "succeeded"

    def refunded() -> None:
        found = asyncio.run(gateway(cluster).lookup(charge_key(uuid.UUID(created["id"]))))
        assert found is not None and found.refunded_cents == found.amount_cents

    eventually(refunded)
    assert_money_matches_tickets(cluster, event, created["id"])
