"""Search on `GET /v1/events` over a real cluster (docs/browse-and-stream.md "Search").

Proves: `q` finds words in the title, the description, the venue's name and the city, every word
must match and the last one may be a prefix (type-ahead); with events on every shard, every page
chain returns each match exactly once in (starts_at, id) order; no `q`, however hostile, is a 500;
the Redis page cache is used, and is emptied when an event is created or changed (with its
negative control: a change made behind the router's back stays invisible until the cache's TTL);
`organizer=me` lists the caller's own events, paused and not-yet-on-sale ones included, and no one
else's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest

from cluster.settings import Settings
from tests.harness import RunningCluster
from tests.support import create_event, event_body, fetch, ga, listing_pages, problem, shard_dsn

pytestmark = pytest.mark.e2e

SHARD_COUNT = 4  # the harness runs the default deployment (tests/harness.py)
EVENTS_PER_SHARD_MIN = 2
EVENTS_MAX = 64  # a uuid4 lands on each of 4 shards with p = 1/4: 64 tries leave none empty in practice




def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def ordered(events: list[dict[str, Any]]) -> list[str]:
    return [event["id"] for event in sorted(events, key=lambda event: (event["starts_at"], uuid.UUID(event["id"])))]


def metric(http: httpx.Client, name: str, label: str) -> float:
    """A counter's value for one label set, summed over the router's workers."""
    return sum(float(line.split()[-1]) for line in http.get("/metrics").text.splitlines()
               if line.startswith(name) and label in line)


@pytest.fixture(scope="module")
def catalogue(http: httpx.Client, cluster: RunningCluster) -> dict[str, Any]:
    """Events whose description carries the module's word, until every shard holds at least two; some
    share a start time (the id breaks the tie). Three more carry a word only in the description, the
    venue name or the city."""
    token = "t" + uuid.uuid4().hex[:10]
    shard_map = Settings(shard_count=SHARD_COUNT).shard_map()
    events: list[dict[str, Any]] = []
    per_shard = dict.fromkeys(range(SHARD_COUNT), 0)
    while min(per_shard.values()) < EVENTS_PER_SHARD_MIN:
        assert len(events) < EVENTS_MAX, per_shard
        index = len(events)
        body = event_body(ga("floor", 10), title=f"Night {index}", description=f"An evening of {token} music",
                          starts_at=f"2032-0{1 + index % 6}-1{index % 3}T20:00:00Z", ends_at=None,
                          venue={"name": "Hall", "city": "Lisbon", "country": "PT"})
        event = create_event(http, cluster, body)
        per_shard[shard_map.shard_of(uuid.UUID(event["id"]))] += 1
        events.append(event)
    words = {field: f"{field}{uuid.uuid4().hex[:8]}" for field in ("description", "venue", "city")}
    places = {
        "description": {"description": f"Unplugged: {words['description']}, acoustic."},
        "venue": {"venue": {"name": f"Sala {words['venue']}", "city": "Porto", "country": "PT"}},
        "city": {"venue": {"name": "Teatro", "city": f"Vila-{words['city']}", "country": "PT"}},
    }
    single = {field: create_event(http, cluster, event_body(ga("floor", 5), title="Quiet night", **overrides))
              for field, overrides in places.items()}
    return {"token": token, "events": events, "words": words, "single": single}


def test_words_in_description_venue_and_city_are_found(http: httpx.Client, catalogue: dict[str, Any]) -> None:
    """Each word, in any case, finds exactly the event that has it, in whichever field it is."""
    for field, word in catalogue["words"].items():
        assert ids(listing_pages(http, 10, q=word.upper())) == [catalogue["single"][field]["id"]], field
    assert ids(listing_pages(http, 10, q=f"Quiet {catalogue['words']['city']}")) == [catalogue["single"]["city"]["id"]]
    assert listing_pages(http, 10, q=f"Loud {catalogue['words']['city']}") == []  # every word must match


def test_the_last_word_is_a_prefix(http: httpx.Client, catalogue: dict[str, Any]) -> None:
    """Type-ahead: a partial last word matches; a partial word before it does not."""
    city_word, venue_word = catalogue["words"]["city"], catalogue["words"]["venue"]
    for length in (5, 8, len(city_word) - 1):
        assert ids(listing_pages(http, 10, q=city_word[:length])) == [catalogue["single"]["city"]["id"]], length
    assert ids(listing_pages(http, 10, q=f"sala {venue_word[:-2]}")) == [catalogue["single"]["venue"]["id"]]
    assert listing_pages(http, 10, q=f"{venue_word[:-2]} sala") == []


def test_every_page_chain_returns_each_match_once_in_order(http: httpx.Client, catalogue: dict[str, Any]) -> None:
    """With matches on every shard, pages of any size merge to the whole ordered result, once each."""
    shard_map = Settings(shard_count=SHARD_COUNT).shard_map()
    assert {shard_map.shard_of(uuid.UUID(event_id)) for event_id in ids(catalogue["events"])} == set(range(SHARD_COUNT))
    expected = ordered(catalogue["events"])
    for limit in (1, 2, 3, 7, 100):
        found = ids(listing_pages(http, limit, q=catalogue["token"]))
        assert found == expected, limit
    # With the filters: a date window on top of the text.
    window = [event for event in catalogue["events"] if "2032-02-01" <= event["starts_at"] < "2032-04-01"]
    assert window
    found = ids(listing_pages(http, 2, q=f"evening {catalogue['token'][:-1]}", **{"from": "2032-02-01T00:00:00Z",
                                                                          "to": "2032-04-01T00:00:00Z"}))
    assert found == ordered(window)


HOSTILE_QUERIES = ["'", '"', "''", "\\", "\\'", "&|!:*()", "a & b | !c", "<->", "<2>", "foo:*", "x:A", ":*",
                   "(((", "!", "'; DROP TABLE events; --", "%", "_", "💥🎸", "ǅemo ﬁne", "\u202eevil", "a\u00a0b",
                   "x" * 100, "x" * 101, "x" * 1000, "\u0000", "ab\u0000cd", "line\nbreak", "\t", " ", ""]


@pytest.mark.parametrize("text", HOSTILE_QUERIES, ids=range(len(HOSTILE_QUERIES)))
def test_hostile_queries_are_answered_never_a_500(http: httpx.Client, catalogue: dict[str, Any], text: str) -> None:
    """Quotes, tsquery operators, NUL, control characters and overlong text: 200 or a 422 problem.
    With the module's word added, the operators stay inert and the word still finds its events."""
    for query in (text, f"{text} {catalogue['token']}", f"{catalogue['token']}{text}"):
        response = http.get("/v1/events", params={"q": query, "limit": "100"})
        assert response.status_code in (200, 422), (query, response.text)
        if response.status_code == 422:
            problem(response, 422, "VALIDATION_ERROR")
            assert "postgres" not in response.text.lower() and "tsquery" not in response.text.lower()
        elif query.startswith(f"{text} ") and text.strip() and not any(char.isalnum() for char in text):
            assert set(ids(catalogue["events"])) <= set(ids(response.json()["items"])), query


def test_a_cached_page_is_emptied_when_an_event_changes(http: httpx.Client, cluster: RunningCluster,
                                                        catalogue: dict[str, Any]) -> None:
    """The same query twice is a cache hit; a PATCH, and a new event, show in the very next answer."""
    query = {"q": catalogue["token"], "status": "on_sale", "limit": "100"}
    first = http.get("/v1/events", params=query).json()
    hits = metric(http, "ticketing_events_cache_lookups_total", 'result="hit"')
    assert http.get("/v1/events", params=query).json() == first
    assert metric(http, "ticketing_events_cache_lookups_total", 'result="hit"') >= hits + 1
    paused = catalogue["events"][0]["id"]
    response = http.patch(f"/v1/events/{paused}", json={"status": "paused"},
                          headers=cluster.headers("organizer-1", "organizer"))
    assert response.status_code == 200, response.text
    after = ids(http.get("/v1/events", params=query).json()["items"])
    assert paused in ids(first["items"]) and paused not in after
    added = create_event(http, cluster, event_body(ga("floor", 5), title=f"Encore {catalogue['token']}",
                                                   starts_at="2032-01-01T00:00:00Z", ends_at=None))
    catalogue["events"].append(added)  # it matches the module's word from now on
    assert ids(http.get("/v1/events", params=query).json()["items"])[0] == added["id"]


def test_negative_control_a_change_behind_the_routers_back_waits_for_the_ttl(http: httpx.Client,
                                                                             cluster: RunningCluster,
                                                                             catalogue: dict[str, Any]) -> None:
    """Without the invalidation a cached page goes stale: a description rewritten in the database
    directly (no router handler runs) is not seen until the page's TTL has passed. So the test above
    passes because of the invalidation, not because nothing is cached."""
    ttl_s = Settings().events_cache_ttl_s
    assert ttl_s > 0
    event = catalogue["single"]["description"]
    word = f"hidden{uuid.uuid4().hex[:8]}"
    query = {"q": word}
    # A new event empties the cache, so the page below is the first of a fresh one: its TTL starts now.
    create_event(http, cluster, event_body(ga("floor", 5), title="Cache reset"))
    assert http.get("/v1/events", params=query).json()["items"] == []  # now cached: an empty page
    asyncio.run(fetch(shard_dsn(cluster, event["id"]), "UPDATE events SET description = $2 WHERE event_id = $1",
                      uuid.UUID(event["id"]), f"Now {word}"))
    started = time.monotonic()
    assert http.get("/v1/events", params=query).json()["items"] == []  # stale, served from the cache
    assert time.monotonic() - started < ttl_s
    deadline = started + ttl_s + 5
    while time.monotonic() < deadline:
        if ids(http.get("/v1/events", params=query).json()["items"]) == [event["id"]]:
            break
        time.sleep(0.25)
    else:
        raise AssertionError("the page never expired")


def test_organizer_me_lists_own_events_of_every_status_and_no_others(http: httpx.Client,
                                                                     cluster: RunningCluster) -> None:
    """An organizer sees its on-sale, paused and not-yet-on-sale events; another organizer's stay out;
    the filter needs an organizer's token, and naming someone else is for admins."""
    mine, theirs = f"org-a-{uuid.uuid4().hex[:8]}", f"org-b-{uuid.uuid4().hex[:8]}"
    on_sale = create_event(http, cluster, event_body(ga("floor", 5), title="Open"), mine)
    paused = create_event(http, cluster, event_body(ga("floor", 5), title="Paused"), mine)
    later = create_event(http, cluster, event_body(ga("floor", 5), title="Draft", starts_at="2035-05-01T20:00:00Z",
                                                   ends_at=None, sale_windows=[
                                                       {"name": "general", "starts_at": "2035-04-01T00:00:00Z"}]), mine)
    other = create_event(http, cluster, event_body(ga("floor", 5), title="Other"), theirs)
    response = http.patch(f"/v1/events/{paused['id']}", json={"status": "paused"},
                          headers=cluster.headers(mine, "organizer"))
    assert response.status_code == 200, response.text
    own = listing_pages(http, 2, cluster.headers(mine, "organizer"), organizer="me")
    assert ids(own) == ordered([on_sale, paused, later])
    assert {item["id"]: item["status"] for item in own}[paused["id"]] == "paused"
    assert ids(listing_pages(http, 2, cluster.headers(theirs, "organizer"), organizer="me")) == [other["id"]]
    paused_only = listing_pages(http, 5, cluster.headers(mine, "organizer"), organizer="me", status="paused")
    assert ids(paused_only) == [paused["id"]]
    assert ids(listing_pages(http, 5, cluster.headers(mine, "organizer"), organizer="me", q="draft")) == [later["id"]]
    assert ids(listing_pages(http, 5, cluster.headers("admin-1", "admin"), organizer=theirs)) == [other["id"]]
    assert ids(listing_pages(http, 5, cluster.headers(mine, "organizer"), organizer=mine)) == ids(own)
    problem(http.get("/v1/events", params={"organizer": "me"}), 401, "UNAUTHENTICATED")
    problem(http.get("/v1/events", params={"organizer": "me"}, headers=cluster.headers("buyer-1")), 403, "FORBIDDEN")
    problem(http.get("/v1/events", params={"organizer": theirs}, headers=cluster.headers(mine, "organizer")),
            403, "FORBIDDEN")
