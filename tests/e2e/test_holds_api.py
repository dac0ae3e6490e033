"""POST/GET/DELETE /v1/holds over HTTP: every error code, limits, idempotency, expiry, release."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.harness import RunningCluster
from tests.support import check_database, create_event, event_body, ga, hold, problem, seated

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def event(http: httpx.Client, cluster: RunningCluster) -> dict[str, object]:
    return create_event(http, cluster, event_body(ga("floor", 20), seated("A", [6, 6]), per_person_limit=4))



def test_hold_shape_and_get_and_release(http: httpx.Client, cluster: RunningCluster, event: dict) -> None:
    created = hold(http, cluster, "shape", {"event_id": event["id"], "seats": ["A-1-1", "A-1-2"]})
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "held" and body["quantity"] == 2 and body["total_cents"] == 2 * 14900
    assert body["items"] == [{"seat": "A-1-1", "section": "A", "price_cents": 14900},
                             {"seat": "A-1-2", "section": "A", "price_cents": 14900}]
    assert body["currency"] == "EUR" and body["expires_at"].endswith("Z")
    fetched = http.get(f"/v1/holds/{body['id']}", headers=cluster.headers("shape"))
    assert fetched.status_code == 200 and fetched.json()["id"] == body["id"]
    problem(http.get(f"/v1/holds/{body['id']}", headers=cluster.headers("someone-else")), 404, "HOLD_NOT_FOUND")

    released = http.delete(f"/v1/holds/{body['id']}", headers=cluster.headers("shape"))
    assert released.status_code == 200 and released.json()["status"] == "released"
    problem(http.delete(f"/v1/holds/{body['id']}", headers=cluster.headers("shape")), 409, "HOLD_NOT_ACTIVE")
    seats = http.get(f"/v1/events/{event['id']}/seats?section=A").json()
    assert seats["sections"][0]["rows"][0]["seats"][:2] == ".."
    check_database(cluster, event["id"])


def test_ga_hold_items_have_no_seat(http: httpx.Client, cluster: RunningCluster, event: dict) -> None:
    body = hold(http, cluster, "ga-shape", {"event_id": event["id"], "section": "floor", "quantity": 2}).json()
    assert body["items"] == [{"seat": None, "section": "floor", "price_cents": 9900}] * 2


def test_all_or_nothing_names_exactly_the_unavailable_seats(http: httpx.Client, cluster: RunningCluster,
                                                           event: dict) -> None:
    assert hold(http, cluster, "first", {"event_id": event["id"], "seats": ["A-2-3"]}).status_code == 201
    refused = hold(http, cluster, "second", {"event_id": event["id"], "seats": ["A-2-2", "A-2-3", "A-2-4"]})
    assert problem(refused, 409, "SEATS_UNAVAILABLE")["unavailable"] == ["A-2-3"]
    row = http.get(f"/v1/events/{event['id']}/seats?section=A").json()["sections"][0]["rows"][1]["seats"]
    assert row[1] == "." and row[3] == ".", "a refused hold left seats behind"
    check_database(cluster, event["id"])


def test_insufficient_inventory_reports_what_is_left(http: httpx.Client, cluster: RunningCluster) -> None:
    small = create_event(http, cluster, event_body(ga("pit", 3)))
    assert hold(http, cluster, "pit-1", {"event_id": small["id"], "section": "pit", "quantity": 2}).status_code == 201
    refused = hold(http, cluster, "pit-2", {"event_id": small["id"], "section": "pit", "quantity": 2})
    assert problem(refused, 409, "INSUFFICIENT_INVENTORY")["available"] == 1


def test_per_person_limit_counts_live_holds(http: httpx.Client, cluster: RunningCluster, event: dict) -> None:
    floor = {"event_id": event["id"], "section": "floor"}
    assert hold(http, cluster, "limited", {**floor, "quantity": 3}).status_code == 201
    problem(hold(http, cluster, "limited", {"event_id": event["id"], "section": "floor", "quantity": 2}),
            409, "LIMIT_EXCEEDED")
    assert hold(http, cluster, "limited", {**floor, "quantity": 1}).status_code == 201


def test_idempotent_replay_and_key_reuse(http: httpx.Client, cluster: RunningCluster, event: dict) -> None:
    body = {"event_id": event["id"], "section": "floor", "quantity": 1}
    first = hold(http, cluster, "replayer", body, key="replay-key")
    again = hold(http, cluster, "replayer", body, key="replay-key")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    problem(hold(http, cluster, "replayer", {**body, "quantity": 2}, key="replay-key"), 422, "IDEMPOTENCY_KEY_REUSED")
    # The same key from another user is another request.
    other = hold(http, cluster, "other-replayer", body, key="replay-key")
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    # A 4xx is a response too: replaying it gives the same 4xx, never a second attempt.
    refused = hold(http, cluster, "replayer", {"event_id": event["id"], "seats": ["A-9-9"]}, key="bad-seat")
    again = hold(http, cluster, "replayer", {"event_id": event["id"], "seats": ["A-9-9"]}, key="bad-seat")
    assert refused.status_code == again.status_code == 422


def test_short_hold_expires_and_returns_inventory(http: httpx.Client, cluster: RunningCluster) -> None:
    """hold_seconds=2: the seat is back on sale within a second of expires_at."""
    quick = create_event(http, cluster, event_body(seated("Q", [4]), hold_seconds=2))
    created = hold(http, cluster, "quick", {"event_id": quick["id"], "seats": ["Q-1-1"]}).json()
    expires_at = time.time() + 2
    deadline = expires_at + 1.0
    while time.time() < deadline + 2:
        row = http.get(f"/v1/events/{quick['id']}/seats").json()["sections"][0]["rows"][0]["seats"]
        if row[0] == ".":
            break
        time.sleep(0.05)
    back_at = time.time()
    assert row[0] == ".", "the expired seat never came back"
    assert back_at <= deadline + 0.3, f"back {back_at - expires_at:.2f} s after expiry"
    status = http.get(f"/v1/holds/{created['id']}", headers=cluster.headers("quick")).json()["status"]
    assert status == "expired"
    check_database(cluster, quick["id"])


def test_sale_windows_and_presale_codes(http: httpx.Client, cluster: RunningCluster) -> None:
    presale = create_event(http, cluster, event_body(ga("floor", 10), sale_windows=[
        {"name": "fans", "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z", "code": "FANCLUB"}]))
    later = create_event(http, cluster, event_body(ga("floor", 10), sale_windows=[
        {"name": "general", "starts_at": "2099-01-01T00:00:00Z"}]))
    body = {"event_id": presale["id"], "section": "floor", "quantity": 1}
    problem(hold(http, cluster, "fan", body), 403, "PRESALE_CODE_INVALID")
    problem(hold(http, cluster, "fan", {**body, "presale_code": "WRONG"}), 403, "PRESALE_CODE_INVALID")
    assert hold(http, cluster, "fan", {**body, "presale_code": "FANCLUB"}).status_code == 201
    problem(hold(http, cluster, "fan", {"event_id": later["id"], "section": "floor", "quantity": 1}),
            403, "SALE_NOT_OPEN")


def test_paused_event_and_queue_mode(http: httpx.Client, cluster: RunningCluster) -> None:
    organizer = cluster.headers("organizer-1", "organizer")
    paused = create_event(http, cluster, event_body(ga("floor", 10)))
    patched = http.patch(f"/v1/events/{paused['id']}", json={"status": "paused"}, headers=organizer)
    assert patched.status_code == 200 and patched.json()["status"] == "paused"
    problem(hold(http, cluster, "b", {"event_id": paused["id"], "section": "floor", "quantity": 1}),
            403, "SALE_NOT_OPEN")
    queued = create_event(http, cluster, event_body(ga("floor", 10), queue={"enabled": True}))
    problem(hold(http, cluster, "b", {"event_id": queued["id"], "section": "floor", "quantity": 1}),
            403, "QUEUE_TOKEN_REQUIRED")
    from router.queue_tokens import QueueTokens

    token, _ = QueueTokens(cluster.queue_token_secret()).issue("b", uuid.UUID(queued["id"]), 60)
    admitted = http.post("/v1/holds", json={"event_id": queued["id"], "section": "floor", "quantity": 1},
                         headers={**cluster.headers("b"), "X-Queue-Token": token})
    assert admitted.status_code == 201
    stolen = http.post("/v1/holds", json={"event_id": queued["id"], "section": "floor", "quantity": 1},
                       headers={**cluster.headers("c"), "X-Queue-Token": token})
    problem(stolen, 403, "QUEUE_TOKEN_REQUIRED")


@pytest.mark.parametrize(("body", "why"), [
    ({"seats": ["A-1-1"], "section": "floor", "quantity": 1}, "both seats and quantity"),
    ({}, "neither seats nor quantity"),
    ({"section": "floor", "quantity": 0}, "quantity < 1"),
    ({"section": "floor", "quantity": 11}, "quantity above the per-hold maximum"),
    ({"section": "floor", "quantity": "2"}, "quantity as a string"),
    ({"seats": ["A-1-1", "A-1-1"]}, "a seat twice"),
    ({"seats": []}, "empty seats"),
    ({"seats": [f"A-1-{n}" for n in range(1, 12)]}, "more seats than the per-hold maximum"),
    ({"section": "floor", "quantity": 1, "adjacent": True}, "adjacent without best_available"),
    ({"section": "floor", "quantity": 1, "colour": "red"}, "an unknown field"),
])
def test_bad_hold_bodies_are_422(http: httpx.Client, cluster: RunningCluster, event: dict, body: dict,
                                 why: str) -> None:
    problem(hold(http, cluster, "bad", {"event_id": event["id"], **body}), 422, "VALIDATION_ERROR")


def test_bad_requests_never_500(http: httpx.Client, cluster: RunningCluster, event: dict) -> None:
    headers = {**cluster.headers("bad"), "content-type": "application/json"}
    problem(http.post("/v1/holds", content=b"{not json", headers=headers), 422, "VALIDATION_ERROR")
    problem(http.post("/v1/holds", content=b"[1,2]", headers=headers), 422, "VALIDATION_ERROR")
    problem(hold(http, cluster, "bad", {"event_id": "not-a-uuid", "section": "floor", "quantity": 1}),
            422, "VALIDATION_ERROR")
    problem(hold(http, cluster, "bad", {"event_id": str(uuid.uuid4()), "section": "floor", "quantity": 1}),
            404, "EVENT_NOT_FOUND")
    problem(hold(http, cluster, "bad", {"event_id": event["id"], "seats": ["A-7-1"]}), 422, "VALIDATION_ERROR")
    problem(hold(http, cluster, "bad", {"event_id": event["id"], "seats": ["nonsense"]}), 422, "VALIDATION_ERROR")
    problem(hold(http, cluster, "bad", {"event_id": event["id"], "section": "nope", "quantity": 1}),
            422, "VALIDATION_ERROR")
    problem(http.post("/v1/holds", content=b"x" * 70_000, headers=headers), 413, "BODY_TOO_LARGE")
    problem(http.get("/v1/holds/not-a-uuid", headers=cluster.headers("bad")), 422, "VALIDATION_ERROR")
    problem(http.get(f"/v1/holds/{uuid.uuid4()}", headers=cluster.headers("bad")), 404, "HOLD_NOT_FOUND")
    problem(http.post("/v1/holds", json={"event_id": event["id"], "section": "floor", "quantity": 1}),
            401, "UNAUTHENTICATED")
    problem(http.post("/v1/holds", json={"event_id": event["id"], "section": "floor", "quantity": 1},
                      headers=cluster.headers("gate", "validator")), 403, "FORBIDDEN")
    long_key = {**cluster.headers("bad"), "Idempotency-Key": "k" * 256}
    problem(http.post("/v1/holds", json={"event_id": event["id"], "section": "floor", "quantity": 1},
                      headers=long_key), 422, "VALIDATION_ERROR")
    check_database(cluster, event["id"])
