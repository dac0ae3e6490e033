"""Events over HTTP: create, get, patch, availability, seat map, and their validation errors."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.harness import RunningCluster
from tests.support import create_event, event_body, ga, problem, seated

pytestmark = pytest.mark.e2e



def test_create_get_and_read_an_event(http: httpx.Client, cluster: RunningCluster) -> None:
    body = event_body(ga("floor", 5000), seated("A", [30, 32], blocked=["A-1-1"]))
    created = create_event(http, cluster, body)
    assert created["status"] == "on_sale" and uuid.UUID(created["id"])
    assert created["title"] == body["title"] and created["sections"][1]["rows"][1] == {"label": "2", "seats": 32}
    fetched = http.get(f"/v1/events/{created['id']}")
    assert fetched.status_code == 200 and fetched.json()["id"] == created["id"]

    answer = http.get(f"/v1/events/{created['id']}/availability")
    # The harness turns the router's read snapshots off (TICKETING_READ_SNAPSHOT_S=0): nothing to keep.
    assert answer.headers["cache-control"] == "no-cache" and answer.headers["age"] == "0"
    availability = answer.json()
    assert availability["total_available"] == 5000 + 61
    floor, block = availability["sections"]
    assert floor == {"id": "floor", "kind": "ga", "capacity": 5000, "available": 5000, "held": 0, "sold": 0,
                     "blocked": 0, "price_cents": 9900}
    assert block["capacity"] == 62 and block["available"] == 61 and block["blocked"] == 1
    seats = http.get(f"/v1/events/{created['id']}/seats", params={"section": "A"}).json()
    assert seats == {"sections": [{"id": "A", "rows": [{"label": "1", "seats": "x" + "." * 29},
                                                       {"label": "2", "seats": "." * 32}]}]}


def test_patch_changes_status_and_windows(http: httpx.Client, cluster: RunningCluster) -> None:
    organizer = cluster.headers("organizer-1", "organizer")
    event = create_event(http, cluster, event_body(ga("floor", 10)))
    windows = [{"name": "general", "starts_at": "2099-01-01T00:00:00Z"}]
    patched = http.patch(f"/v1/events/{event['id']}", json={"sale_windows": windows}, headers=organizer)
    assert patched.status_code == 200 and patched.json()["sale_windows"][0]["name"] == "general"
    refused = http.post("/v1/holds", json={"event_id": event["id"], "section": "floor", "quantity": 1},
                        headers=cluster.headers("buyer"))
    problem(refused, 403, "SALE_NOT_OPEN")
    assert http.patch(f"/v1/events/{event['id']}", json={"sale_windows": []}, headers=organizer).status_code == 200
    assert http.patch(f"/v1/events/{event['id']}", json={"status": "cancelled"}, headers=organizer).json()[
        "status"] == "cancelled"
    problem(http.patch(f"/v1/events/{event['id']}", json={"status": "paused"},
                       headers=cluster.headers("organizer-2", "organizer")), 403, "FORBIDDEN")
    problem(http.patch(f"/v1/events/{event['id']}", json={}, headers=organizer), 422, "VALIDATION_ERROR")
    problem(http.patch(f"/v1/events/{event['id']}", json={"status": "sold"}, headers=organizer),
            422, "VALIDATION_ERROR")


@pytest.mark.parametrize(("change", "why"), [
    ({"sections": []}, "empty sections"),
    ({"sections": [ga("floor", 0)]}, "capacity 0"),
    ({"sections": [ga("floor", 10), ga("floor", 20)]}, "duplicate section ids"),
    ({"ends_at": "2027-05-01T19:00:00Z"}, "ends before it starts"),
    ({"hold_seconds": 0}, "hold_seconds below the minimum"),
    ({"hold_seconds": 3601}, "hold_seconds above 3600"),
    ({"sections": [seated("A", [2000] * 501)]}, "more seats than the configured maximum"),
    ({"starts_at": "2027-05-01T20:00:00"}, "time without zone"),
    ({"currency": "euro"}, "bad currency"),
    ({"sections": [seated("A", [3], blocked=["A-9-9"])]}, "blocked seat outside the layout"),
    ({"sale_windows": [{"starts_at": "2027-01-02T00:00:00Z", "ends_at": "2027-01-01T00:00:00Z"}]}, "window order"),
    ({"title": ""}, "empty title"),
])
def test_invalid_events_are_422(http: httpx.Client, cluster: RunningCluster, change: dict, why: str) -> None:
    response = http.post("/v1/events", json=event_body(**change), headers=cluster.headers("org", "organizer"))
    problem(response, 422, "VALIDATION_ERROR")


def test_event_errors(http: httpx.Client, cluster: RunningCluster) -> None:
    problem(http.get(f"/v1/events/{uuid.uuid4()}"), 404, "EVENT_NOT_FOUND")
    problem(http.get(f"/v1/events/{uuid.uuid4()}/availability"), 404, "EVENT_NOT_FOUND")
    problem(http.get(f"/v1/events/{uuid.uuid4()}/seats"), 404, "EVENT_NOT_FOUND")
    problem(http.get("/v1/events/123"), 422, "VALIDATION_ERROR")
    problem(http.post("/v1/events", json=event_body(), headers=cluster.headers("b", "buyer")), 403, "FORBIDDEN")
    problem(http.post("/v1/events", json=event_body()), 401, "UNAUTHENTICATED")
    event = create_event(http, cluster, event_body(ga("floor", 10)))
    problem(http.get(f"/v1/events/{event['id']}/seats", params={"section": "floor"}), 422, "VALIDATION_ERROR")


def test_openapi_describes_the_contract(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    for path in ("/v1/events", "/v1/events/{event_id}", "/v1/events/{event_id}/availability",
                 "/v1/events/{event_id}/seats", "/v1/holds", "/v1/holds/{hold_id}"):
        assert path in spec["paths"], path
    hold_post = spec["paths"]["/v1/holds"]["post"]
    assert "requestBody" in hold_post and {"409", "422", "503"} <= set(hold_post["responses"])
