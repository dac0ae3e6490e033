"""Browsing events across shards (`GET /v1/events`) and the live seat map (`.../seats/stream`) over HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from cluster.settings import Settings
from tests.harness import RunningCluster
from tests.support import create_event, event_body, ga, hold, problem, seated

pytestmark = pytest.mark.e2e

STREAM_EVENT_WAIT_S = 5.0  # the feed polls every 0.5 s, so a change shows within about a second
STREAM_READ_TIMEOUT_S = 5.0



def pages(http: httpx.Client, limit: int, **params: str) -> list[dict[str, Any]]:
    """Every item of a listing, following next_cursor with pages of `limit`."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        query = {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        response = http.get("/v1/events", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the listing never ended")


@pytest.fixture(scope="module")
def catalogue(http: httpx.Client, cluster: RunningCluster) -> dict[str, Any]:
    """Eight events under a category of their own; two start at the same time (the id breaks the tie)."""
    token = uuid.uuid4().hex[:10]
    starts = ["2031-03-01T20:00:00Z", "2031-01-05T19:00:00Z", "2031-02-10T21:00:00Z", "2031-02-10T21:00:00Z",
              "2031-04-01T18:30:00Z", "2031-01-20T20:00:00Z", "2031-05-09T20:00:00Z", "2031-03-15T20:00:00Z"]
    events = []
    for index, starts_at in enumerate(starts):
        city = f"Porto-{token}" if index % 2 else f"Faro-{token}"
        body = event_body(ga("floor", 10), title=f"{token} Night {index}", category=f"cat-{token}",
                          venue={"name": "Hall", "city": city, "country": "PT"},
                          starts_at=starts_at, ends_at=None)
        events.append(create_event(http, cluster, body))
    ordered = sorted(events, key=lambda event: (event["starts_at"], uuid.UUID(event["id"])))
    return {"token": token, "category": f"cat-{token}", "events": events, "ordered": ordered}


def test_pages_cover_every_event_once_in_order(http: httpx.Client, catalogue: dict[str, Any]) -> None:
    """Small pages merged from all shards: complete, no duplicates, ordered by (starts_at, id)."""
    shard_map = Settings(shard_count=4).shard_map()
    assert len({shard_map.shard_of(uuid.UUID(event["id"])) for event in catalogue["events"]}) > 1
    expected = [event["id"] for event in catalogue["ordered"]]
    for limit in (1, 3, 8, 100):
        items = pages(http, limit, category=catalogue["category"])
        assert [item["id"] for item in items] == expected, limit
    first = http.get("/v1/events", params={"category": catalogue["category"], "limit": "8"}).json()
    assert first["next_cursor"] is None  # exactly a page: no empty page to follow


def test_items_have_the_event_shape(http: httpx.Client, catalogue: dict[str, Any], cluster: RunningCluster) -> None:
    """An item is the event as `GET /v1/events/{id}` shows it, without the organizer (seated sections add capacity)."""
    event = create_event(http, cluster, event_body(ga("floor", 10), seated("A", [4, 4], blocked=["A-2-3"]),
                                                   category=f"shape-{catalogue['token']}"))
    items = http.get("/v1/events", params={"category": f"shape-{catalogue['token']}"}).json()["items"]
    assert len(items) == 1 and "organizer_id" not in items[0]
    fetched = http.get(f"/v1/events/{event['id']}").json()
    for key in ("id", "title", "category", "venue", "currency", "hold_seconds", "status"):
        assert items[0][key] == fetched[key], key
    for listed, shown in zip(items[0]["sections"], fetched["sections"], strict=True):
        assert listed == {**shown, "capacity": listed["capacity"]}
    assert items[0]["sections"][1]["blocked"] == ["A-2-3"] and items[0]["sections"][1]["capacity"] == 8


def test_filters(http: httpx.Client, catalogue: dict[str, Any], cluster: RunningCluster) -> None:
    """city, q (case-insensitive, literal), from (inclusive) / to (exclusive) and status narrow the listing."""
    token, ordered = catalogue["token"], catalogue["ordered"]
    by_city = pages(http, 2, city=f"Porto-{token}")
    assert sorted(item["id"] for item in by_city) == sorted(e["id"] for e in catalogue["events"][1::2])
    found = pages(http, 5, q=f"{token.upper()} NIGHT 3")
    assert [item["title"] for item in found] == [f"{token} Night 3"]
    assert pages(http, 5, q=f"{token}%") == [] and pages(http, 5, q=f"{token}_Night") == []
    window = pages(http, 2, category=catalogue["category"], **{"from": ordered[2]["starts_at"],
                                                               "to": ordered[6]["starts_at"]})
    assert [item["id"] for item in window] == [event["id"] for event in ordered[2:6]]
    first = pages(http, 2, category=catalogue["category"], **{"from": "2031-01-05T20:00:00+01:00",
                                                              "to": "2031-01-05T19:00:00.000001Z"})
    assert [item["id"] for item in first] == [ordered[0]["id"]]
    cancelled = ordered[-1]["id"]
    response = http.patch(f"/v1/events/{cancelled}", json={"status": "cancelled"},
                          headers=cluster.headers("organizer-1", "organizer"))
    assert response.status_code == 200, response.text
    listed = {item["id"]: item["status"] for item in pages(http, 10, category=catalogue["category"])}
    assert listed[cancelled] == "cancelled" and len(listed) == len(ordered)
    only = pages(http, 10, category=catalogue["category"], status="cancelled")
    assert [item["id"] for item in only] == [cancelled]


def test_bad_parameters_are_validation_errors(http: httpx.Client, catalogue: dict[str, Any]) -> None:
    """limit outside 1..100, a tampered cursor, times that are not RFC 3339 → 422, never a 500."""
    for params in ({"limit": "0"}, {"limit": "101"}, {"limit": "ten"}, {"cursor": "!!!!"}, {"cursor": "AAAA"},
                   {"cursor": "x" * 65}, {"from": "yesterday"}, {"to": "2031-13-01T00:00:00Z"},
                   {"from": "2031-01-01T00:00:00"}, {"q": "x" * 101}, {"status": "sold"}):
        problem(http.get("/v1/events", params=params), 422, "VALIDATION_ERROR")
    page = http.get("/v1/events", params={"category": catalogue["category"], "limit": "1"}).json()
    assert page["next_cursor"]
    problem(http.get("/v1/events", params={"cursor": page["next_cursor"][:-2]}), 422, "VALIDATION_ERROR")


# Seat stream ------------------------------------------------------------------------------------

def sse(response: httpx.Response, wait_s: float) -> Iterator[dict[str, str]]:
    """Server-sent events (and comments, as {"comment": …}) until `wait_s` has passed."""
    deadline = time.monotonic() + wait_s
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            return
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif fields:
            yield fields
            fields = {}


def next_event(events: Iterator[dict[str, str]], kind: str) -> dict[str, Any]:
    for event in events:
        if event.get("event") == kind:
            return {"id": int(event["id"]), "data": orjson.loads(event["data"])}
    raise AssertionError(f"no {kind!r} event within {STREAM_EVENT_WAIT_S} s")


def open_streams(http: httpx.Client) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("ticketing_seat_streams_open "):
            return float(line.split()[1])
    return 0.0


def test_stream_sends_snapshot_then_changes(http: httpx.Client, cluster: RunningCluster) -> None:
    """A snapshot first; a seat hold then shows as a `seats` event with that seat `h` and an `availability` event."""
    event = create_event(http, cluster, event_body(seated("A", [5, 5]), ga("floor", 10)))
    url = f"/v1/events/{event['id']}/seats/stream"
    with http.stream("GET", url, timeout=STREAM_READ_TIMEOUT_S) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse(response, STREAM_EVENT_WAIT_S * 3)
        snapshot = next_event(events, "snapshot")
        assert snapshot["data"]["seats"] == {"sections": [{"id": "A", "rows": [{"label": "1", "seats": "....."},
                                                                               {"label": "2", "seats": "....."}]}]}
        assert snapshot["data"]["availability"]["total_available"] == 20
        assert open_streams(http) >= 1

        assert hold(http, cluster, "stream-buyer", {"event_id": event["id"], "seats": ["A-1-2"]}).status_code == 201
        seats = next_event(events, "seats")
        assert seats["data"] == {"section": "A", "rows": [{"label": "1", "seats": ".h..."}]}
        availability = next_event(events, "availability")
        section_a = next(s for s in availability["data"]["sections"] if s["id"] == "A")
        assert section_a["held"] == 1 and availability["data"]["total_available"] == 19
        assert snapshot["id"] < seats["id"] < availability["id"]

        # A GA hold changes no seat row: only an availability event follows.
        response_ga = hold(http, cluster, "stream-buyer", {"event_id": event["id"], "section": "floor", "quantity": 2})
        assert response_ga.status_code == 201
        for item in events:
            assert item.get("event") != "seats", item
            if item.get("event") == "availability":
                floor = next(s for s in orjson.loads(item["data"])["sections"] if s["id"] == "floor")
                assert floor["held"] == 2 and int(item["id"]) > availability["id"]
                break
        else:
            raise AssertionError("no availability event for the GA hold")

    # The client left: the server notices within a poll and frees the stream.
    deadline = time.monotonic() + STREAM_EVENT_WAIT_S
    while open_streams(http) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert open_streams(http) == 0


def test_stream_ids_continue_after_last_event_id(http: httpx.Client, cluster: RunningCluster) -> None:
    """A reconnecting EventSource sends Last-Event-ID; the new snapshot's id follows it."""
    event = create_event(http, cluster, event_body(ga("floor", 10)))
    url = f"/v1/events/{event['id']}/seats/stream"
    with http.stream("GET", url, headers={"Last-Event-ID": "41"}, timeout=STREAM_READ_TIMEOUT_S) as response:
        snapshot = next_event(sse(response, STREAM_EVENT_WAIT_S), "snapshot")
    assert snapshot["id"] == 42 and snapshot["data"]["seats"] == {"sections": []}


def test_stream_of_unknown_event_is_a_problem(http: httpx.Client) -> None:
    """Unknown event → 404 EVENT_NOT_FOUND before any stream starts; a malformed id → 422."""
    problem(http.get(f"/v1/events/{uuid.uuid4()}/seats/stream"), 404, "EVENT_NOT_FOUND")
    problem(http.get("/v1/events/not-a-uuid/seats/stream"), 422, "VALIDATION_ERROR")
