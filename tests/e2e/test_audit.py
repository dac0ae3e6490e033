"""An event's audit trail over a real cluster (issue 15 "Audit", docs/organizers.md "Audit").

Proves: after a checkout, a check-in at a named gate by a validator's token, an event PATCH and a
refund, `GET /v1/events/{id}/audit` lists each with the actor's sub and role, the action, from → to,
the request id the client got back in X-Request-Id, and the gate; pages of two chain without gaps
or repeats to the same entries as one large page; another organizer gets 404, buyers and validators
403, a cursor we did not hand out 422; and a hold adds no entry while a check-in does (its
negative control: the count that stays put for a hold moves for a check-in).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.harness import RunningCluster
from tests.support import create_event, event_body, ga, hold

pytestmark = pytest.mark.e2e


def _request_id(label: str) -> str:
    return f"audit-{label}-{uuid.uuid4().hex[:12]}"


def _sent(response: httpx.Response, request_id: str) -> str:
    """The request id the client got back: the one it sent (the edge keeps a well-formed one)."""
    assert response.headers["x-request-id"] == request_id
    return request_id


def _buy(http: httpx.Client, cluster: RunningCluster, event_id: str, user: str) -> tuple[dict[str, Any], str]:
    created = hold(http, cluster, user, {"event_id": event_id, "section": "floor", "quantity": 1})
    assert created.status_code == 201, created.text
    request_id = _request_id("checkout")
    paid = http.post(f"/v1/holds/{created.json()['id']}/checkout", json={"payment": {"token": "tok_visa"}},
                     headers={**cluster.headers(user), "Idempotency-Key": f"pay-{uuid.uuid4()}",
                              "X-Request-Id": request_id}, timeout=60)
    assert paid.status_code == 201, paid.text
    return dict(paid.json()), _sent(paid, request_id)


def _all_entries(http: httpx.Client, headers: dict[str, str], event_id: str, limit: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = http.get(f"/v1/events/{event_id}/audit", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        entries += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return entries
    raise AssertionError("the page chain did not end")


def _one(entries: list[dict[str, Any]], action: str, subject_id: str) -> dict[str, Any]:
    (entry,) = [e for e in entries if e["action"] == action and e["subject"]["id"] == subject_id]
    return entry


@pytest.fixture(scope="module")
def audited(http: httpx.Client, cluster: RunningCluster) -> dict[str, Any]:
    organizer = f"audit-org-{uuid.uuid4().hex[:8]}"
    event = create_event(http, cluster, event_body(ga("floor", 100), per_person_limit=None), organizer)
    event_id = event["id"]
    owner = cluster.headers(organizer, "organizer")
    entered, checkout_request = _buy(http, cluster, event_id, "aud-ana")
    refunded, _ = _buy(http, cluster, event_id, "aud-ben")
    validator = f"gate-staff-{uuid.uuid4().hex[:6]}"
    checkin_request = _request_id("checkin")
    response = http.post("/v1/checkins", json={"code": entered["tickets"][0]["code"], "gate": "east-3"},
                         headers={**cluster.headers(validator, "validator", [event_id]),
                                  "X-Request-Id": checkin_request})
    assert response.status_code == 200, response.text
    _sent(response, checkin_request)
    patch_request = _request_id("patch")
    response = http.patch(f"/v1/events/{event_id}", json={"status": "paused"},
                          headers={**owner, "X-Request-Id": patch_request})
    assert response.status_code == 200, response.text
    _sent(response, patch_request)
    refund_request = _request_id("refund")
    response = http.post(f"/v1/orders/{refunded['order']['id']}/refund",
                         headers={**cluster.headers("aud-ben"), "X-Request-Id": refund_request})
    assert response.status_code == 200, response.text
    _sent(response, refund_request)
    return {"event": event, "organizer": organizer, "owner": owner, "validator": validator,
            "entered": entered, "refunded": refunded, "requests": {
                "checkout": checkout_request, "checkin": checkin_request, "patch": patch_request,
                "refund": refund_request}}


def test_each_change_is_audited_with_who_what_and_which_request(
        http: httpx.Client, audited: dict[str, Any]) -> None:
    event_id = audited["event"]["id"]
    entries = _all_entries(http, audited["owner"], event_id, 500)
    requests = audited["requests"]
    ticket_id = audited["entered"]["tickets"][0]["id"]

    checkin = _one(entries, "ticket.checked_in", ticket_id)
    assert checkin["actor"] == {"sub": audited["validator"], "role": "validator"}
    assert (checkin["from"], checkin["to"], checkin["request_id"]) == ("valid", "checked_in", requests["checkin"])
    assert checkin["detail"]["gate"] == "east-3"

    confirmed = _one(entries, "order.confirmed", audited["entered"]["order"]["id"])
    assert confirmed["actor"] == {"sub": "aud-ana", "role": "buyer"}
    assert (confirmed["from"], confirmed["to"], confirmed["request_id"]) == (None, "confirmed", requests["checkout"])
    charges = [e for e in entries if e["action"] == "charge.succeeded" and e["request_id"] == requests["checkout"]]
    assert len(charges) == 1 and charges[0]["subject"]["type"] == "payment"

    created = _one(entries, "event.created", event_id)
    assert created["actor"] == {"sub": audited["organizer"], "role": "organizer"}
    assert (created["from"], created["to"], created["detail"]["sections"]) == (None, "on_sale", ["floor"])
    assert entries[0] == created  # the first row of the event's history

    paused = _one(entries, "event.paused", event_id)
    assert paused["actor"] == {"sub": audited["organizer"], "role": "organizer"}
    assert (paused["from"], paused["to"], paused["request_id"]) == ("on_sale", "paused", requests["patch"])

    order_id = audited["refunded"]["order"]["id"]
    refund = _one(entries, "order.refunded", order_id)
    assert refund["actor"] == {"sub": "aud-ben", "role": "buyer"}
    assert (refund["from"], refund["to"], refund["request_id"]) == ("confirmed", "refunded", requests["refund"])
    refunded_ticket = _one(entries, "ticket.refunded", audited["refunded"]["tickets"][0]["id"])
    assert refunded_ticket["request_id"] == requests["refund"]
    owed = [e for e in entries if e["action"] == "refund.pending" and e["request_id"] == requests["refund"]]
    assert len(owed) == 1 and owed[0]["detail"]["order_id"] == order_id

    assert not [e for e in entries if e["subject"]["type"] == "hold"], "holds are counted, not audited"
    times = [e["at"] for e in entries]
    assert times == sorted(times), "oldest first"


def test_pages_chain_without_gaps_or_repeats(http: httpx.Client, audited: dict[str, Any]) -> None:
    event_id = audited["event"]["id"]
    whole = _all_entries(http, audited["owner"], event_id, 500)
    paged = _all_entries(http, audited["owner"], event_id, 2)
    assert len(whole) >= 8
    assert [e["id"] for e in paged] == [e["id"] for e in whole]
    assert len({e["id"] for e in paged}) == len(paged)


def test_who_may_read_the_audit(http: httpx.Client, cluster: RunningCluster, audited: dict[str, Any]) -> None:
    path = f"/v1/events/{audited['event']['id']}/audit"
    assert http.get(path, headers=cluster.headers("admin-1", "admin")).status_code == 200
    other = http.get(path, headers=cluster.headers(f"other-org-{uuid.uuid4().hex[:6]}", "organizer"))
    assert (other.status_code, other.json()["code"]) == (404, "EVENT_NOT_FOUND")
    missing = http.get(f"/v1/events/{uuid.uuid4()}/audit", headers=audited["owner"])
    assert (missing.status_code, missing.json()["code"]) == (404, "EVENT_NOT_FOUND")
    assert http.get(path, headers=cluster.headers("aud-ana")).status_code == 403
    validator = cluster.headers(audited["validator"], "validator", [audited["event"]["id"]])
    assert http.get(path, headers=validator).status_code == 403
    assert http.get(path).status_code == 401


@pytest.mark.parametrize("cursor", ["not-a-cursor", "YTk5OTk5OTk5OTk5OTk5OTk5OTk5", "Yi0x", "' OR 1=1 --"])
def test_a_hostile_cursor_is_422(http: httpx.Client, audited: dict[str, Any], cursor: str) -> None:
    response = http.get(f"/v1/events/{audited['event']['id']}/audit", params={"cursor": cursor},
                        headers=audited["owner"])
    assert (response.status_code, response.json()["code"]) == (422, "VALIDATION_ERROR")


def test_a_limit_beyond_the_setting_is_422(http: httpx.Client, audited: dict[str, Any]) -> None:
    response = http.get(f"/v1/events/{audited['event']['id']}/audit", params={"limit": 10**6},
                        headers=audited["owner"])
    assert response.status_code == 422


def test_a_hold_adds_no_entry_and_a_check_in_does(http: httpx.Client, cluster: RunningCluster,
                                                  audited: dict[str, Any]) -> None:
    """Holds aside. Negative control: the same count moves for a check-in, so a count that does
    not move for the hold is not a read that misses new rows."""
    event_id = audited["event"]["id"]
    owner = audited["owner"]
    response = http.patch(f"/v1/events/{event_id}", json={"status": "on_sale"}, headers=owner)
    assert response.status_code == 200, response.text
    before = len(_all_entries(http, owner, event_id, 500))
    created = hold(http, cluster, "aud-cy", {"event_id": event_id, "section": "floor", "quantity": 2})
    assert created.status_code == 201, created.text
    released = http.delete(f"/v1/holds/{created.json()['id']}", headers=cluster.headers("aud-cy"))
    assert released.status_code == 200, released.text
    assert len(_all_entries(http, owner, event_id, 500)) == before
    bought, _ = _buy(http, cluster, event_id, "aud-dee")
    after_checkout = len(_all_entries(http, owner, event_id, 500))
    assert after_checkout > before  # order, ticket and charge; its hold's rows are not among them
    response = http.post("/v1/checkins", json={"code": bought["tickets"][0]["code"], "gate": "west"},
                         headers=cluster.headers(audited["organizer"], "organizer"))
    assert response.status_code == 200, response.text
    assert len(_all_entries(http, owner, event_id, 500)) == after_checkout + 1
