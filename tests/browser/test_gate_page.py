"""The gate page in a real browser: it verifies a code's Ed25519 signature with the published keys
(WebCrypto) before calling the server, admits a ticket once and says "already used" (when, which
gate) the second time, rejects a tampered code without sending anything, and keeps admitting with
no network — once per ticket — queueing the check-ins it sends when the network returns."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.harness import RunningCluster
from tests.support import create_event, event_body, ga, problem

pytestmark = pytest.mark.e2e
expect = pytest.importorskip("playwright.sync_api", reason="browser tests need Playwright for Python").expect
Pages = Any  # tests/browser/conftest.py


def bought_codes(http: httpx.Client, cluster: RunningCluster,
                 quantity: int) -> tuple[str, list[str], tuple[dict[str, str], str]]:
    """(event id, the tickets' codes, (the buyer's headers, the order id))."""
    event = create_event(http, cluster, event_body(ga("floor", 20), title="Gate night"))
    buyer = cluster.headers(f"gate-buyer-{uuid.uuid4().hex[:8]}")
    hold = http.post("/v1/holds", json={"event_id": event["id"], "section": "floor", "quantity": quantity},
                     headers={**buyer, "Idempotency-Key": uuid.uuid4().hex})
    assert hold.status_code == 201, hold.text
    paid = http.post(f"/v1/holds/{hold.json()['id']}/checkout", json={"payment": {"token": "tok_visa"}},
                     headers={**buyer, "Idempotency-Key": uuid.uuid4().hex})
    assert paid.status_code == 201, paid.text
    return (str(event["id"]), [ticket["code"] for ticket in paid.json()["tickets"]],
            (buyer, paid.json()["order"]["id"]))


def tampered(code: str) -> str:
    """The same code with one payload character changed: well-formed, but not what was signed."""
    version, kid, payload, signature = code.split(".")
    index = 20
    swapped = "A" if payload[index] != "A" else "B"
    return ".".join((version, kid, payload[:index] + swapped + payload[index + 1:], signature))


def scan(page: Any, code: str) -> None:
    page.get_by_label("Ticket code").fill(code)
    page.get_by_role("button", name="Check in").click()


def test_the_gate_admits_once_refuses_reuse_and_rejects_a_tampered_code_offline_first(
        pages: Pages, cluster: RunningCluster, http: httpx.Client, sign_in: Callable[[Any, str], None],
        screenshot: Callable[[Any, str], Any]) -> None:
    event_id, codes, _ = bought_codes(http, cluster, 3)
    page = pages.open("/gate")
    checkins: list[str] = []
    page.on("request", lambda request: checkins.append(request.url) if "/v1/checkins" in request.url else None)
    sign_in(page, cluster.token(f"gate-{uuid.uuid4().hex[:6]}", "validator", events=[event_id]))
    expect(page.locator("#offline-state")).to_contain_text(re.compile(r"[1-9]\d* signing keys?"))
    page.get_by_label("Gate", exact=True).fill("north")

    scan(page, codes[0])
    expect(page.locator("#verdict")).to_have_text("ADMITTED")
    expect(page.locator("#verdict-detail")).to_have_text("floor")
    assert len(checkins) == 1
    scan(page, codes[0])
    expect(page.locator("#verdict")).to_have_text("ALREADY USED")
    expect(page.locator("#verdict-detail")).to_contain_text("at gate north")
    assert len(checkins) == 2

    scan(page, tampered(codes[1]))
    expect(page.locator("#verdict")).to_have_text("INVALID")
    expect(page.locator("#verdict-detail")).to_contain_text("bad signature")
    page.wait_for_timeout(500)
    assert len(checkins) == 2, f"a tampered code reached the server: {checkins}"
    # The server never saw it: the untampered code is still unused.
    screenshot(page, "gate")

    # No network: verified with the cached keys, admitted once, queued.
    page.context.set_offline(True)
    expect(page.locator("#network")).to_contain_text("Offline")
    scan(page, codes[2])
    expect(page.locator("#verdict")).to_have_text("ADMITTED (offline)")
    scan(page, codes[2])
    expect(page.locator("#verdict")).to_have_text("ALREADY USED")
    scan(page, tampered(codes[2]))
    expect(page.locator("#verdict")).to_have_text("INVALID")
    expect(page.locator("#offline-state")).to_contain_text("1 check-in waiting")
    page.context.set_offline(False)
    expect(page.locator("#offline-state")).to_contain_text("0 check-ins waiting")
    again = http.post("/v1/checkins", json={"code": codes[2], "gate": "south"},
                      headers=cluster.headers("gate-check", "validator", events=[event_id]))
    assert problem(again, 409, "TICKET_ALREADY_USED")["gate"] == "north"
    untouched = http.post("/v1/checkins", json={"code": codes[1], "gate": "south"},
                          headers=cluster.headers("gate-check", "validator", events=[event_id]))
    assert untouched.status_code == 200, untouched.text


def test_the_gate_shows_a_refunded_ticket_void_from_the_revocation_list_offline(
        pages: Pages, cluster: RunningCluster, http: httpx.Client, sign_in: Callable[[Any, str], None]) -> None:
    event_id, codes, (buyer, order_id) = bought_codes(http, cluster, 1)
    page = pages.open("/gate")
    sign_in(page, cluster.token(f"gate-{uuid.uuid4().hex[:6]}", "validator", events=[event_id]))
    expect(page.locator("#offline-state")).to_contain_text("signing key")
    refund = http.post(f"/v1/orders/{order_id}/refund", headers={**buyer, "Idempotency-Key": uuid.uuid4().hex})
    assert refund.status_code == 200, refund.text
    page.get_by_role("button", name="Sync now").click()
    expect(page.locator("#offline-state")).to_contain_text("1 void ticket")
    page.context.set_offline(True)
    scan(page, codes[0])
    expect(page.locator("#verdict")).to_have_text("VOID")
    expect(page.locator("#verdict-detail")).to_contain_text("refunded")
