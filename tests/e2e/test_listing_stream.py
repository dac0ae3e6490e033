"""Browsing events across shards (`GET /v1/events`) and the live seat map (`.../seats/stream`) over HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest

from cluster.settings import Settings
from tests.harness import RunningCluster
from tests.support import create_event, event_body, ga, hold, listing_pages, problem, seated

pytestmark = pytest.mark.e2e

STREAM_EVENT_WAIT_S = 5.0  # changes are pushed: they show well within this
STREAM_READ_TIMEOUT_S = 5.0





@pytest.fixture(scope="module")
def catalogue(http: httpx.Client, cluster: RunningCluster) -> dict[str, Any]:
    """Eight events under a category of their own; two start at the same time (the id breaks the tie)."""
    token = "t" + uuid.uuid4().hex[:10]  # a letter first: a digit could be the prefix a type-ahead query ends with
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
        items = listing_pages(http, limit, category=catalogue["category"])
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
    """city, q (full text: every word, case-insensitive, punctuation only separates words), from (inclusive) /
    to (exclusive) and status narrow the listing (tests/e2e/test_search.py tests the search itself)."""
    token, ordered = catalogue["token"], catalogue["ordered"]
    by_city = listing_pages(http, 2, city=f"Porto-{token}")
    assert sorted(item["id"] for item in by_city) == sorted(e["id"] for e in catalogue["events"][1::2])
    found = listing_pages(http, 5, q=f"{token.upper()} NIGHT 3")
    assert [item["title"] for item in found] == [f"{token} Night 3"]
    # `%` and `_` are neither LIKE wildcards nor tsquery operators: they separate words.
    assert len(listing_pages(http, 5, q=f"{token}%")) == len(ordered)
    assert listing_pages(http, 5, q=f"%{token}_Night_3") == found
    window = listing_pages(http, 2, category=catalogue["category"], **{"from": ordered[2]["starts_at"],
                                                               "to": ordered[6]["starts_at"]})
    assert [item["id"] for item in window] == [event["id"] for event in ordered[2:6]]
    first = listing_pages(http, 2, category=catalogue["category"], **{"from": "2031-01-05T20:00:00+01:00",
                                                              "to": "2031-01-05T19:00:00.000001Z"})
    assert [item["id"] for item in first] == [ordered[0]["id"]]
    cancelled = ordered[-1]["id"]
    response = http.patch(f"/v1/events/{cancelled}", json={"status": "cancelled"},
                          headers=cluster.headers("organizer-1", "organizer"))
    assert response.status_code == 200, response.text
    listed = {item["id"]: item["status"] for item in listing_pages(http, 10, category=catalogue["category"])}
    assert listed[cancelled] == "cancelled" and len(listed) == len(ordered)
    only = listing_pages(http, 10, category=catalogue["category"], status="cancelled")
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


def order(event_id: str) -> tuple[int, int]:
    """An SSE id is the event's Redis stream entry id: `<milliseconds>-<sequence>`."""
    milliseconds, _, sequence = event_id.partition("-")
    return int(milliseconds), int(sequence)


def next_event(events: Iterator[dict[str, str]], kind: str) -> dict[str, Any]:
    for event in events:
        if event.get("event") == kind:
            return {"id": event["id"], "data": orjson.loads(event["data"]), "at": time.monotonic()}
    raise AssertionError(f"no {kind!r} event within {STREAM_EVENT_WAIT_S} s")


def metric(http: httpx.Client, name: str) -> float:
    return sum(float(line.split()[-1]) for line in http.get("/metrics").text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def open_streams(http: httpx.Client) -> float:
    return metric(http, "ticketing_seat_streams_open ")


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
        assert section_a["held"] == 1 and section_a["available"] == 9 and availability["data"]["total_available"] == 19
        assert order(snapshot["id"]) < order(seats["id"]) <= order(availability["id"])

        # A GA hold changes no seat row: only an availability event follows.
        response_ga = hold(http, cluster, "stream-buyer", {"event_id": event["id"], "section": "floor", "quantity": 2})
        assert response_ga.status_code == 201
        for item in events:
            assert item.get("event") != "seats", item
            if item.get("event") == "availability":
                floor = next(s for s in orjson.loads(item["data"])["sections"] if s["id"] == "floor")
                assert floor["held"] == 2 and floor["available"] == 8 and order(item["id"]) > order(availability["id"])
                break
        else:
            raise AssertionError("no availability event for the GA hold")

    # The client left: the server notices and frees the stream.
    deadline = time.monotonic() + STREAM_EVENT_WAIT_S
    while open_streams(http) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert open_streams(http) == 0


def test_a_seat_goes_held_then_sold_within_a_second_of_each_commit(http: httpx.Client,
                                                                   cluster: RunningCluster) -> None:
    """Pushed after commit, not polled: `h` arrives within 1 s of the hold's 201, `s` within 1 s of
    the checkout's 201; the `availability` event's `as_of` is the commit's time."""
    event = create_event(http, cluster, event_body(seated("A", [4])))
    with http.stream("GET", f"/v1/events/{event['id']}/seats/stream", timeout=STREAM_READ_TIMEOUT_S) as response:
        events = sse(response, STREAM_EVENT_WAIT_S * 3)
        next_event(events, "snapshot")
        held = hold(http, cluster, "push-buyer", {"event_id": event["id"], "seats": ["A-1-3"]})
        answered = time.monotonic()
        assert held.status_code == 201, held.text
        seats = next_event(events, "seats")
        assert seats["data"]["rows"] == [{"label": "1", "seats": "..h."}]
        assert seats["at"] - answered < 1.0
        availability = next_event(events, "availability")
        as_of = datetime.fromisoformat(availability["data"]["as_of"].replace("Z", "+00:00")).timestamp()
        assert abs(as_of - time.time()) < 5  # the commit's time, not a placeholder
        paid = http.post(f"/v1/holds/{held.json()['id']}/checkout", json={"payment": {"token": "tok_visa"}},
                         headers={**cluster.headers("push-buyer"), "Idempotency-Key": f"pay-{held.json()['id']}"})
        answered = time.monotonic()
        assert paid.status_code == 201, paid.text
        sold = next_event(events, "seats")
        assert sold["data"]["rows"] == [{"label": "1", "seats": "..s."}]
        assert sold["at"] - answered < 1.0


def test_a_reconnect_resumes_from_last_event_id(http: httpx.Client, cluster: RunningCluster) -> None:
    """A client that reconnects with the id it saw last is sent only the rows changed since (no
    snapshot); an id the stream no longer has, or a malformed one, gets a fresh snapshot."""
    event = create_event(http, cluster, event_body(seated("A", [3, 3, 3])))
    url = f"/v1/events/{event['id']}/seats/stream"
    with http.stream("GET", url, timeout=STREAM_READ_TIMEOUT_S) as response:
        events = sse(response, STREAM_EVENT_WAIT_S * 2)
        next_event(events, "snapshot")
        assert hold(http, cluster, "resume-buyer", {"event_id": event["id"], "seats": ["A-1-1"]}).status_code == 201
        last_seen = next_event(events, "availability")["id"]
    # Away: two more rows change.
    assert hold(http, cluster, "resume-buyer", {"event_id": event["id"], "seats": ["A-2-2"]}).status_code == 201
    assert hold(http, cluster, "resume-buyer", {"event_id": event["id"], "seats": ["A-3-3"]}).status_code == 201
    time.sleep(0.3)  # let this worker's feed read them (a fresh worker resumes from Redis alike)
    with http.stream("GET", url, headers={"Last-Event-ID": last_seen}, timeout=STREAM_READ_TIMEOUT_S) as response:
        events = sse(response, STREAM_EVENT_WAIT_S)
        first = next(item for item in events if "event" in item)
        assert first["event"] == "seats", first  # not a snapshot
        assert order(first["id"]) > order(last_seen)
        rows = {row["label"]: row["seats"] for row in orjson.loads(first["data"])["rows"]}
        for item in events:  # the rest of the catch-up, up to its availability event
            if item.get("event") == "availability":
                break
            if item.get("event") == "seats":
                rows.update({row["label"]: row["seats"] for row in orjson.loads(item["data"])["rows"]})
        assert rows == {"2": ".h.", "3": "..h"}
    for stale in ("41", "1-0", "not-an-id"):
        with http.stream("GET", url, headers={"Last-Event-ID": stale}, timeout=STREAM_READ_TIMEOUT_S) as response:
            snapshot = next_event(sse(response, STREAM_EVENT_WAIT_S), "snapshot")
        assert snapshot["data"]["seats"]["sections"][0]["rows"][0]["seats"] == "h.."


def test_a_gap_in_the_feed_sends_a_fresh_snapshot(http: httpx.Client, cluster: RunningCluster) -> None:
    """An entry whose sequence number skips (a publish lost between commit and Redis) makes the
    router re-read the seat map and send its streams a new snapshot; negative control: entries in
    sequence do not."""
    import redis

    event = create_event(http, cluster, event_body(seated("A", [4])))
    client = redis.Redis.from_url(str(cluster.state()["redis_url"]))
    key = f"ticketing:seats:{{{event['id']}}}"
    with http.stream("GET", f"/v1/events/{event['id']}/seats/stream", timeout=STREAM_READ_TIMEOUT_S) as response:
        events = sse(response, STREAM_EVENT_WAIT_S * 3)
        next_event(events, "snapshot")
        assert hold(http, cluster, "gap-buyer", {"event_id": event["id"], "seats": ["A-1-1"]}).status_code == 201
        next_event(events, "availability")
        (_, fields), = client.xrevrange(key, count=1)
        epoch, number = int(fields[b"e"]), int(fields[b"n"])
        # In sequence: applied as a change (a seat row shows it), no snapshot.
        client.xadd(key, {"e": epoch, "n": number + 1, "t": f"{time.time():.6f}",
                          "d": orjson.dumps({"s": [["A", "1", 3, "x"]], "p": []})})
        assert next_event(events, "seats")["data"]["rows"] == [{"label": "1", "seats": "h..x"}]
        # A gap: the seat map is read again from the actor (which never blocked seat 4).
        client.xadd(key, {"e": epoch, "n": number + 5, "t": f"{time.time():.6f}",
                          "d": orjson.dumps({"s": [], "p": []})})
        snapshot = next_event(events, "snapshot")
        assert snapshot["data"]["seats"]["sections"][0]["rows"][0]["seats"] == "h..."
    assert metric(http, "ticketing_seat_feed_resyncs_total{") >= 1


def test_many_idle_subscribers_cost_the_actor_one_read(http: httpx.Client, cluster: RunningCluster) -> None:
    """A hundred streams of one event: the actor is read when a worker's first stream opens (at
    most once per worker), never per stream, and a change reaches every stream."""
    event = create_event(http, cluster, event_body(seated("A", [10])))
    url = f"{cluster.base_url}/v1/events/{event['id']}/seats/stream"
    reads_before = metric(http, 'ticketing_shard_batch_size_count{kind="read"')

    async def watch(client: httpx.AsyncClient, opened: asyncio.Queue[None]) -> str:
        async with client.stream("GET", url, timeout=STREAM_READ_TIMEOUT_S * 4) as response:
            assert response.status_code == 200
            await opened.put(None)
            kind = ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    kind = line.partition(":")[2].strip()
                elif line.startswith("data:") and kind == "seats":
                    return line
        return ""

    async def crowd() -> list[str]:
        opened: asyncio.Queue[None] = asyncio.Queue()
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(limits=limits) as client:
            watchers = [asyncio.create_task(watch(client, opened)) for _ in range(100)]
            for _ in watchers:
                await asyncio.wait_for(opened.get(), STREAM_READ_TIMEOUT_S * 2)
            reads = metric(http, 'ticketing_shard_batch_size_count{kind="read"') - reads_before
            assert reads <= 2 * 2, reads  # two reads (seat map, availability) per worker at most
            response = await client.post(f"{cluster.base_url}/v1/holds", json={"event_id": event["id"],
                                         "seats": ["A-1-5"]}, headers=cluster.headers("crowd-buyer"))
            assert response.status_code == 201, response.text
            return await asyncio.wait_for(asyncio.gather(*watchers), STREAM_EVENT_WAIT_S * 2)

    lines = asyncio.run(crowd())
    assert all("....h....." in line for line in lines), lines[:3]


def test_stream_of_unknown_event_is_a_problem(http: httpx.Client) -> None:
    """Unknown event → 404 EVENT_NOT_FOUND before any stream starts; a malformed id → 422."""
    problem(http.get(f"/v1/events/{uuid.uuid4()}/seats/stream"), 404, "EVENT_NOT_FOUND")
    problem(http.get("/v1/events/not-a-uuid/seats/stream"), 422, "VALIDATION_ERROR")
