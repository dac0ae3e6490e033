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

from router.checkout import CheckoutRequest, CheckoutService, build_checkout_service
from router.checkout.gateway import SimulatedGateway
from router.checkout.keys import charge_key, fail_key, refund_key
from router.tickets import KeyRing, TicketClaims
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

    decoded = [result.text for result in zxingcpp.read_barcodes(  # QR only: see tests/unit/test_qr.py
        Image.open(io.BytesIO(png.content)), formats=zxingcpp.BarcodeFormat.QRCode)]
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


class Crash(BaseException):
    """This router process dies here: nothing after this point of the saga runs."""


class StepGateway:
    """The simulated gateway with a fault injected before or after one kind of call."""

    def __init__(self, inner: Any, operation: str, *, before: Any = None, after: Any = None) -> None:
        self.inner, self.operation, self.before, self.after = inner, operation, before, after

    async def _around(self, operation: str, call: Any) -> Any:
        if operation == self.operation and self.before is not None:
            await self.before()
        result = await call
        if operation == self.operation and self.after is not None:
            await self.after()
        return result

    async def charge(self, **arguments: Any) -> Any:
        return await self._around("charge", self.inner.charge(**arguments))

    async def refund(self, **arguments: Any) -> Any:
        return await self._around("refund", self.inner.refund(**arguments))

    async def lookup(self, idempotency_key: str) -> Any:
        return await self.inner.lookup(idempotency_key)


async def in_process(cluster: RunningCluster, saga: Any) -> Any:
    """Run `saga(service, runtime)` with a checkout service of this test process, joined to the
    cluster's Ray, Postgres and Redis like a router worker: a router whose gateway the test wraps."""
    from cluster.raycluster import prepare_local_ray_environment
    from cluster.settings import Settings
    from router.runtime import Runtime
    from router.shard_client import ShardClient

    prepare_local_ray_environment()  # as the router workers join the cluster's loopback Ray
    state = cluster.state()
    settings = Settings(data_dir=cluster.data_dir, shard_count=4, pg_dsns=state["pg_dsns"],  # type: ignore[arg-type]
                        ray_address=str(state["ray_address"]), redis_url=str(state["redis_url"]),
                        gateway_call_timeout_s=2, payment_timeout_s=3)
    runtime = Runtime(settings)
    await runtime.start()
    client = ShardClient(runtime, settings)
    try:
        return await saga(lambda gateway: build_checkout_service(runtime, client, gateway, settings), runtime)
    finally:
        await client.close()
        await runtime.close()


def shard_of(event: dict[str, Any]) -> int:
    from cluster.settings import Settings

    return Settings(shard_count=4).shard_map().shard_of(uuid.UUID(event["id"]))


def checkout_in_process(cluster: RunningCluster, event: dict[str, Any], user: str, hold_id: str, key: str,
                        wrap: Any) -> BaseException | None:
    """One checkout through an in-process service whose gateway `wrap(simulated, service, runtime)`
    builds; returns what it raised (a Crash, an ApiError) or None."""
    request = CheckoutRequest(shard_of(event), user, uuid.UUID(hold_id), key, "tok_visa", ())

    async def saga(build: Any, runtime: Any) -> BaseException | None:
        box: dict[str, CheckoutService] = {}
        gateway = wrap(gateway_for(cluster), box, runtime)
        box["service"] = build(gateway)
        try:
            await box["service"].checkout(request)
        except (Crash, Exception) as error:
            return error
        return None

    return asyncio.run(in_process(cluster, saga))


def gateway_for(cluster: RunningCluster) -> SimulatedGateway:
    return SimulatedGateway(cluster.data_dir, call_timeout_s=2, slow_delay_s=1)


async def die() -> None:
    raise Crash


def test_actor_killed_between_charge_and_confirm_then_client_retries(
        http: httpx.Client, cluster: RunningCluster, event: dict[str, Any]) -> None:
    """The shard actor is killed while the charge is in flight; the confirmation then fails or is
    retried by the shard client, and the client's retry with its key gets the tickets, paid once."""
    created = hold(http, cluster, "killed", {"event_id": event["id"], "section": "floor", "quantity": 2}).json()

    def kill_shard_after_charge(simulated: Any, box: Any, runtime: Any) -> StepGateway:
        async def kill() -> None:
            import ray

            ray.kill(runtime.actor(shard_of(event)), no_restart=False)
            runtime.forget_actor(shard_of(event))

        return StepGateway(simulated, "charge", after=kill)

    first = checkout_in_process(cluster, event, "killed", created["id"], "kill-pay", kill_shard_after_charge)
    assert first is None or getattr(first, "status", None) == 503, first
    second = checkout(http, cluster, "killed", created["id"], key="kill-pay")
    assert second.status_code == 201, second.text
    assert len(second.json()["tickets"]) == 2
    assert_money_matches_tickets(cluster, event, created["id"])
    check_database(cluster, event["id"])


def test_nobody_confirms_after_charge_and_the_resolver_settles_it(
        http: httpx.Client, cluster: RunningCluster, event: dict[str, Any]) -> None:
    """The router dies right after the charge: the cluster's resolver confirms the hold."""
    created = hold(http, cluster, "orphan", {"event_id": event["id"], "section": "floor", "quantity": 1}).json()
    crashed = checkout_in_process(cluster, event, "orphan", created["id"], "orphan-pay",
                                  lambda simulated, box, runtime: StepGateway(simulated, "charge", after=die))
    assert isinstance(crashed, Crash)
    assert wait_for_hold(http, cluster, "orphan", created["id"], {"confirmed", "failed"}) == "confirmed"
    eventually(lambda: assert_money_matches_tickets(cluster, event, created["id"]))
    mine = http.get("/v1/me/tickets", params={"event_id": event["id"]}, headers=cluster.headers("orphan")).json()
    assert len(mine["items"]) == 1
    retried = checkout(http, cluster, "orphan", created["id"], key="orphan-pay")
    assert retried.status_code == 201 and retried.json()["tickets"][0]["id"] == mine["items"][0]["id"]
    check_database(cluster, event["id"])


def test_payment_for_a_hold_that_can_no_longer_be_confirmed_is_refunded(
        http: httpx.Client, cluster: RunningCluster, event: dict[str, Any]) -> None:
    """The hold is failed (as the resolver would) while the charge is in flight: the charge is refunded."""
    created = hold(http, cluster, "tooslow", {"event_id": event["id"], "section": "floor", "quantity": 1}).json()
    hold_id = uuid.UUID(created["id"])

    def fail_hold_after_charge(simulated: Any, box: Any, runtime: Any) -> StepGateway:
        async def give_up() -> None:
            from actors.inventory.commands import FailCheckout

            await box["service"].shards.apply(shard_of(event), FailCheckout("tooslow", hold_id, fail_key(hold_id)),
                                              retryable=True)

        return StepGateway(simulated, "charge", after=give_up)

    refused = checkout_in_process(cluster, event, "tooslow", created["id"], "slow-pay", fail_hold_after_charge)
    assert getattr(refused, "status", None) == 409, refused
    charge = asyncio.run(gateway(cluster).lookup(charge_key(hold_id)))
    assert charge is not None and charge.refunded_cents == charge.amount_cents
    assert_money_matches_tickets(cluster, event, created["id"])
    assert refund_key(hold_id)


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
    crashed = checkout_in_process(cluster, event, "late", created["id"], "late-pay",
                                  lambda simulated, box, runtime: StepGateway(simulated, "charge", before=die))
    assert isinstance(crashed, Crash)
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


def test_a_refund_interrupted_before_the_gateway_is_paid_by_the_resolver(
        http: httpx.Client, cluster: RunningCluster, event: dict[str, Any]) -> None:
    """Defect 5: the router dies between the refund's commit and the gateway refund. The debt was
    committed with the refund (pending), so the resolver pays it; the client's retry with the same
    key answers the refunded order instead of 409."""
    paid = bought(http, cluster, event, "crashrefund", seats=["A-2-15"])
    order_id = uuid.UUID(paid["order"]["id"])

    async def saga(build: Any, runtime: Any) -> BaseException | None:
        from actors.inventory.results import OrderView
        from actors.protocol import GetOrder
        from router.checkout import RefundRequest

        service = build(StepGateway(gateway_for(cluster), "refund", before=die))
        order = await service.shards.read(shard_of(event), GetOrder(order_id, "crashrefund"))
        assert isinstance(order, OrderView)
        try:
            await service.refund_order(RefundRequest(shard_of(event), "crashrefund", order, False, "refund-crash"))
        except Crash as crash:
            return crash
        return None

    assert isinstance(asyncio.run(in_process(cluster, saga)), Crash)
    def refunded_at_the_gateway() -> None:
        rows = asyncio.run(fetch(shard_dsn(cluster, event["id"]), """SELECT hold_id FROM orders
                                                                     WHERE order_id = $1""", order_id))
        charge = asyncio.run(gateway(cluster).lookup(charge_key(rows[0]["hold_id"])))
        assert charge is not None and charge.refunded_cents == charge.amount_cents

    eventually(refunded_at_the_gateway)
    retried = http.post(f"/v1/orders/{order_id}/refund", headers={**cluster.headers("crashrefund"),
                                                                   "Idempotency-Key": "refund-crash"})
    assert retried.status_code == 200 and retried.json()["status"] == "refunded"
    statuses = asyncio.run(fetch(shard_dsn(cluster, event["id"]),
                                 "SELECT status FROM payments WHERE order_id = $1 AND kind = 'refund'", order_id))
    assert [row["status"] for row in statuses] == ["succeeded"]


def test_a_free_event_sells_without_a_charge(http: httpx.Client, cluster: RunningCluster) -> None:
    """Defect 9: price 0 is allowed at creation and now also at checkout (no gateway call)."""
    free = create_event(http, cluster, event_body(ga("floor", 10, price_cents=0)))
    created = hold(http, cluster, "freebie", {"event_id": free["id"], "section": "floor", "quantity": 2}).json()
    paid = checkout(http, cluster, "freebie", created["id"], key="free-pay")
    assert paid.status_code == 201, paid.text
    assert paid.json()["order"]["total_cents"] == 0 and len(paid.json()["tickets"]) == 2
    assert asyncio.run(gateway(cluster).lookup(charge_key(uuid.UUID(created["id"])))) is None
    refunded = http.post(f"/v1/orders/{paid.json()['order']['id']}/refund", headers=cluster.headers("freebie"))
    assert refunded.status_code == 200 and refunded.json()["status"] == "refunded"


def test_the_owner_cannot_preempt_the_resolvers_keys(http: httpx.Client, cluster: RunningCluster,
                                                     event: dict[str, Any]) -> None:
    """Defect 4: the owner used to send the resolver's key first (`resolver:<hold>:fail`), so the
    resolver's step replayed a refusal and the hold stayed pinned for ever. The resolver's keys are
    now unsendable; the hold left pinned by a lost charge reply is settled anyway."""
    created = hold(http, cluster, "sneaky", {"event_id": event["id"], "section": "floor", "quantity": 1}).json()
    problem(checkout(http, cluster, "sneaky", created["id"], "tok_lost", key="sneaky-pay"), 502,
            "PAYMENT_GATEWAY_ERROR")
    for old_key in (f"resolver:{created['id']}:fail", f"resolver:{created['id']}:confirm"):
        http.delete(f"/v1/holds/{created['id']}", headers={**cluster.headers("sneaky"), "Idempotency-Key": old_key})
    assert wait_for_hold(http, cluster, "sneaky", created["id"], {"confirmed", "failed"}) == "confirmed"


def test_a_255_character_key_checks_out(http: httpx.Client, cluster: RunningCluster, event: dict[str, Any]) -> None:
    """Defect 4: `<key>:pin` overflowed the 255-character column and failed the whole group commit."""
    created = hold(http, cluster, "longkey", {"event_id": event["id"], "section": "floor", "quantity": 1}).json()
    paid = checkout(http, cluster, "longkey", created["id"], key="k" * 255)
    assert paid.status_code == 201, paid.text
    assert checkout(http, cluster, "longkey", created["id"], key="k" * 255).json() == paid.json()


def test_a_transferred_ticket_is_not_refunded_to_its_sender(http: httpx.Client, cluster: RunningCluster,
                                                            event: dict[str, Any]) -> None:
    """Defect 6: refunding the order after a transfer voided the recipient's ticket and paid the
    sender. Now the recipient keeps a valid ticket and only the sender's ticket is paid back."""
    paid = bought(http, cluster, event, "sender", quantity=2)
    given = paid["tickets"][1]
    moved = http.post(f"/v1/tickets/{given['id']}/transfer", json={"to": "recipient"},
                      headers={**cluster.headers("sender"), "Idempotency-Key": "give-away"})
    assert moved.status_code == 201, moved.text
    refunded = http.post(f"/v1/orders/{paid['order']['id']}/refund", headers=cluster.headers("sender"))
    assert refunded.status_code == 200, refunded.text
    new_ticket = http.get(f"/v1/tickets/{moved.json()['id']}", headers=cluster.headers("recipient")).json()
    assert new_ticket["status"] == "valid"
    rows = asyncio.run(fetch(shard_dsn(cluster, event["id"]), "SELECT hold_id FROM orders WHERE order_id = $1",
                             uuid.UUID(paid["order"]["id"])))
    charge = asyncio.run(gateway(cluster).lookup(charge_key(rows[0]["hold_id"])))
    assert charge is not None and charge.refunded_cents == charge.amount_cents // 2
    check_database(cluster, event["id"])
