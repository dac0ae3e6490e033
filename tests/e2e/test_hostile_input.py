"""Hostile input is refused at the edge: 422 VALIDATION_ERROR naming the field, nothing changes, and
a client repeating poison requests cannot fail the honest buyers batched with it on the same shard.

Each trigger below once reached a shard actor and failed its whole group commit (every co-batched
buyer got 503 with Postgres' own message in `detail`): NUL characters in any text, times Postgres
or the writer cannot represent (years near 1 or 9999), and unbounded numbers.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from router.browse import encode_cursor
from tests.harness import RunningCluster
from tests.support import create_event, event_body, ga, hold, problem, seated

pytestmark = pytest.mark.e2e

HONEST_BUYERS = 24
POISON_ROUNDS = 12


@pytest.fixture(scope="module")
def event(http: httpx.Client, cluster: RunningCluster) -> dict[str, Any]:
    return create_event(http, cluster, event_body(ga("floor", 200), seated("A", [10, 10]), per_person_limit=6))


def availability(http: httpx.Client, event_id: str) -> list[dict[str, Any]]:
    response = http.get(f"/v1/events/{event_id}/availability")
    assert response.status_code == 200, response.text
    return [{key: value for key, value in section.items() if key != "as_of"} for section in response.json()["sections"]]


def refused(response: httpx.Response, field: str) -> dict[str, Any]:
    """A 422 VALIDATION_ERROR whose `errors` (or detail) name `field`, with no database text in it."""
    body = problem(response, 422, "VALIDATION_ERROR")
    named = [".".join(item["loc"]) for item in body.get("errors", [])] + [body["detail"]]
    assert any(field in text for text in named), body
    assert "postgres" not in response.text.lower() and "asyncpg" not in response.text.lower()
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.mark.parametrize("seats", [["A-1-\u0000"], ["A-1-1", "A-1-2\u0000"], ["\u0000"], ["A-1-1\u001f"]])
def test_nul_in_hold_seats_is_refused_and_holds_nothing(http: httpx.Client, cluster: RunningCluster,
                                                       event: dict[str, Any], seats: list[str]) -> None:
    """The reproducer of the issue: a NUL in a seat label, with and without an Idempotency-Key."""
    before = availability(http, event["id"])
    for key in (None, f"poison-{uuid.uuid4()}"):
        refused(hold(http, cluster, "nul-seats", {"event_id": event["id"], "seats": seats}, key=key), "seats")
    assert availability(http, event["id"]) == before


def test_nul_in_presale_code_and_section_is_refused(http: httpx.Client, cluster: RunningCluster,
                                                    event: dict[str, Any]) -> None:
    before = availability(http, event["id"])
    refused(hold(http, cluster, "nul-code", {"event_id": event["id"], "section": "floor", "quantity": 1,
                                             "presale_code": "FAN\u0000"}), "presale_code")
    refused(hold(http, cluster, "nul-code", {"event_id": event["id"], "section": "fl\u0000oor", "quantity": 1}),
            "section")
    assert availability(http, event["id"]) == before


def test_lone_surrogate_in_a_body_is_refused(http: httpx.Client, cluster: RunningCluster,
                                             event: dict[str, Any]) -> None:
    """A lone surrogate has no UTF-8 form, so no database could store it: the JSON is refused as a whole."""
    before = availability(http, event["id"])
    raw = b'{"event_id": "' + event["id"].encode() + b'", "seats": ["A-1-\\ud800"]}'
    response = http.post("/v1/holds", content=raw, headers={**cluster.headers("surrogate"),
                                                            "content-type": "application/json"})
    body = problem(response, 422, "VALIDATION_ERROR")
    assert "escape" in body["detail"] or "surrogate" in body["detail"]
    assert availability(http, event["id"]) == before


def _marked_event(marker: str, **overrides: Any) -> dict[str, Any]:
    return event_body(ga("floor", 5), title=f"hostile {marker}", **overrides)


EVENT_TEXT_POISON = [
    ("title", {"title": "Night\u00001"}),
    ("description", {"description": "fine\u0000text"}),
    ("category", {"category": "con\u0000cert"}),
    ("venue.name", {"venue": {"name": "Ar\u0000ena", "city": "Lisbon", "country": "PT"}}),
    ("venue.city", {"venue": {"name": "Arena", "city": "Lis\u0000bon", "country": "PT"}}),
    ("sale_windows.0.name", {"sale_windows": [{"name": "pre\u0000sale", "starts_at": "2027-01-01T00:00:00Z"}]}),
    ("sale_windows.0.code", {"sale_windows": [{"name": "presale", "starts_at": "2027-01-01T00:00:00Z",
                                               "code": "FAN\u0000"}]}),
    ("sections.0.ga.name", {"sections": [{**ga("floor", 5), "name": "Flo\u0000or"}]}),
    ("sections.0.seated.blocked.0", {"sections": [seated("A", [3], blocked=["A-1-\u0000"])]}),
]


@pytest.mark.parametrize(("field", "overrides"), EVENT_TEXT_POISON, ids=[field for field, _ in EVENT_TEXT_POISON])
def test_nul_in_event_texts_is_refused_and_creates_nothing(http: httpx.Client, cluster: RunningCluster,
                                                           field: str, overrides: dict[str, Any]) -> None:
    marker = uuid.uuid4().hex[:12]
    body = {**_marked_event(marker), **overrides}
    if field == "title":
        body["title"] = f"hostile {marker}\u0000"
    refused(http.post("/v1/events", json=body, headers=cluster.headers("hostile-org", "organizer")), field)
    listed = http.get("/v1/events", params={"q": marker})
    assert listed.status_code == 200 and listed.json()["items"] == []


def test_nul_in_patched_sale_window_is_refused(http: httpx.Client, cluster: RunningCluster,
                                               event: dict[str, Any]) -> None:
    patch = {"sale_windows": [{"name": "w\u0000", "starts_at": "2027-01-01T00:00:00Z"}]}
    refused(http.patch(f"/v1/events/{event['id']}", json=patch, headers=cluster.headers("organizer-1", "organizer")),
            "sale_windows.0.name")
    assert http.get(f"/v1/events/{event['id']}").json()["sale_windows"] == []


@pytest.mark.parametrize("parameter", ["q", "category", "city", "cursor"])
def test_nul_in_listing_query_is_refused(http: httpx.Client, parameter: str) -> None:
    refused(http.get("/v1/events", params={parameter: "con\u0000cert"}), parameter)


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2999-12-31T23:30:00-05:00",
                                    "1899-12-31T23:59:59Z", "3000-01-01T00:00:00Z"])
def test_extreme_times_in_event_bodies_are_refused(http: httpx.Client, cluster: RunningCluster, moment: str) -> None:
    """Years outside 1900-2999 (after conversion to UTC) overflowed the writer or asyncpg."""
    organizer = cluster.headers("hostile-org", "organizer")
    marker = uuid.uuid4().hex[:12]
    refused(http.post("/v1/events", json=_marked_event(marker, starts_at=moment, ends_at=None), headers=organizer),
            "starts_at")
    refused(http.post("/v1/events", json=_marked_event(marker, ends_at=moment), headers=organizer), "ends_at")
    window = {"name": "w", "starts_at": moment}
    refused(http.post("/v1/events", json=_marked_event(marker, sale_windows=[window]), headers=organizer),
            "sale_windows.0.starts_at")
    assert http.get("/v1/events", params={"q": marker}).json()["items"] == []


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+01:00",
                                    "1e20", "99999999999999"])
@pytest.mark.parametrize("parameter", ["from", "to"])
def test_extreme_times_in_listing_bounds_are_refused(http: httpx.Client, parameter: str, moment: str) -> None:
    refused(http.get("/v1/events", params={parameter: moment}), parameter)


@pytest.mark.parametrize("moment", [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC)])
def test_cursors_with_extreme_times_are_refused(http: httpx.Client, moment: datetime) -> None:
    """A cursor is client input too: a well-formed one carrying a time outside 1900-2999 is refused."""
    refused(http.get("/v1/events", params={"cursor": encode_cursor(moment, uuid.uuid4())}), "cursor")


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_revocation_cursors_with_extreme_times_are_refused(http: httpx.Client, cluster: RunningCluster,
                                                           event: dict[str, Any], moment: str) -> None:
    """The revocations cursor carries an ISO time; these once overflowed on the way to Postgres (500)."""
    cursor = base64.urlsafe_b64encode(f"{moment}|{uuid.uuid4()}".encode()).rstrip(b"=").decode()
    response = http.get(f"/v1/events/{event['id']}/revocations", params={"cursor": cursor},
                        headers=cluster.headers("hostile-admin", "admin"))
    refused(response, "cursor")


HUGE = 10**30
HUGE_NUMBERS = [
    ("quantity", {"section": "floor", "quantity": HUGE}),
    ("quantity", {"section": "floor", "quantity": -HUGE}),
    ("seats", {"seats": [f"A-1-{number}" for number in range(1, 1000)]}),
    ("seats", {"seats": ["A-1-" + "9" * 60]}),
]


@pytest.mark.parametrize(("field", "fields"), HUGE_NUMBERS, ids=["huge", "negative", "many-seats", "long-label"])
def test_huge_numbers_and_lists_in_holds_are_refused(http: httpx.Client, cluster: RunningCluster,
                                                     event: dict[str, Any], field: str, fields: dict[str, Any]) -> None:
    before = availability(http, event["id"])
    refused(hold(http, cluster, "huge", {"event_id": event["id"], **fields}), field)
    assert availability(http, event["id"]) == before


@pytest.mark.parametrize(("field", "overrides"), [
    ("sections.0.ga.capacity", {"sections": [ga("floor", HUGE)]}),
    ("sections.0.ga.price_cents", {"sections": [ga("floor", 5, price_cents=HUGE)]}),
    ("hold_seconds", {"hold_seconds": HUGE}),
    ("per_person_limit", {"per_person_limit": -HUGE}),
    ("queue.admit_per_second", {"queue": {"enabled": True, "admit_per_second": HUGE}}),
    ("title", {"title": "x" * 20_000}),
    ("description", {"description": "x" * 40_000}),
], ids=["capacity", "price", "hold-seconds", "limit", "admit-rate", "title", "description"])
def test_huge_numbers_and_strings_in_events_are_refused(http: httpx.Client, cluster: RunningCluster, field: str,
                                                        overrides: dict[str, Any]) -> None:
    marker = uuid.uuid4().hex[:12]
    body = {**_marked_event(marker), **overrides}
    refused(http.post("/v1/events", json=body, headers=cluster.headers("hostile-org", "organizer")), field)
    assert http.get("/v1/events", params={"q": marker}).json()["items"] == []


@pytest.mark.parametrize("limit", [str(HUGE), "-1", "0"])
def test_huge_listing_limit_is_refused(http: httpx.Client, limit: str) -> None:
    refused(http.get("/v1/events", params={"limit": limit}), "limit")


@pytest.mark.parametrize("key", ["k\x85", "tab\tkey", "x" * 256, "é-key", "no\xa0break"])
def test_unstorable_idempotency_keys_are_refused(http: httpx.Client, cluster: RunningCluster,
                                                 event: dict[str, Any], key: str) -> None:
    """Keys are stored as given; only 1-255 printable ASCII characters are accepted (headers carry bytes)."""
    before = availability(http, event["id"])
    headers = {**cluster.headers("bad-key"), "Idempotency-Key": key.encode("latin-1")}  # type: ignore[dict-item]
    response = http.post("/v1/holds", json={"event_id": event["id"], "section": "floor", "quantity": 1},
                         headers=headers)
    refused(response, "Idempotency-Key")
    assert availability(http, event["id"]) == before


def test_poison_requests_do_not_fail_honest_buyers_on_the_same_shard(cluster: RunningCluster,
                                                                     event: dict[str, Any]) -> None:
    """The acceptance test of the issue: while one client repeats every poison hold on a shard, 20+
    concurrent honest holds on the same event all succeed — none is failed by a co-batched commit."""
    poison_bodies = [{"event_id": event["id"], "seats": ["A-1-\u0000"]},
                     {"event_id": event["id"], "section": "floor", "quantity": 1, "presale_code": "\u0000"},
                     {"event_id": event["id"], "section": "floor", "quantity": HUGE}]

    async def run() -> tuple[list[httpx.Response], list[httpx.Response]]:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=cluster.base_url, timeout=60, limits=limits) as client:
            async def poison() -> list[httpx.Response]:
                replies = []
                for round_number in range(POISON_ROUNDS):
                    for body in poison_bodies:
                        headers = {**cluster.headers("poisoner"), "Idempotency-Key": f"p-{round_number}-{uuid.uuid4()}"}
                        replies.append(await client.post("/v1/holds", json=body, headers=headers))
                return replies

            async def honest(index: int) -> httpx.Response:
                await asyncio.sleep(0.01 * (index % 8))  # spread over the poisoner's requests
                headers = {**cluster.headers(f"honest-{index}"), "Idempotency-Key": f"honest-{uuid.uuid4()}"}
                return await client.post("/v1/holds", headers=headers,
                                         json={"event_id": event["id"], "section": "floor", "quantity": 1})

            poisoned, *honest_replies = await asyncio.gather(poison(), *(honest(i) for i in range(HONEST_BUYERS)))
            return poisoned, list(honest_replies)

    poisoned, honest_replies = asyncio.run(run())
    assert [reply.status_code for reply in honest_replies] == [201] * HONEST_BUYERS, \
        [reply.text for reply in honest_replies if reply.status_code != 201][:3]
    assert {reply.status_code for reply in poisoned} == {422}
