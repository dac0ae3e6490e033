"""The organizer's page in a real browser: an event created from the form (a seated section with
rows, a GA pool, a sale window) appears under "My events" with live sales numbers that follow a
purchase, pausing it from the page stops its sale, and cancelling it (after a confirmation) is final."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.harness import RunningCluster
from tests.support import problem

pytestmark = pytest.mark.e2e
expect = pytest.importorskip("playwright.sync_api", reason="browser tests need Playwright for Python").expect
Pages = Any  # tests/browser/conftest.py


def test_an_organizer_creates_an_event_watches_its_sales_and_pauses_it(
        pages: Pages, cluster: RunningCluster, http: httpx.Client, sign_in: Callable[[Any, str], None],
        screenshot: Callable[[Any, str], Any]) -> None:
    organizer = f"web-organizer-{uuid.uuid4().hex[:8]}"
    page = pages.open("/organizer")
    sign_in(page, cluster.token(organizer, "organizer"))
    expect(page.locator("#mine")).to_contain_text("No events yet")
    title = f"Form night {uuid.uuid4().hex[:4]}"
    page.get_by_label("Title", exact=True).fill(title)
    page.get_by_label("Venue name").fill("Coliseu")
    page.get_by_label("City", exact=True).fill("Porto")
    page.get_by_label("Rows").fill("1:8, 2:8")
    page.get_by_role("button", name="Add a section").click()
    page.get_by_label("Id (used in seat labels)").nth(1).fill("pit")
    page.get_by_label("Name", exact=True).nth(1).fill("Pit")
    page.get_by_label("Kind").nth(1).select_option("ga")
    page.get_by_label("Capacity", exact=True).nth(1).fill("30")
    page.get_by_role("button", name="Add a sale window").click()
    page.get_by_label("Opens").fill("2026-01-01T10:00")
    page.get_by_role("button", name="Create event").click()

    card = page.locator("li.card", has_text=title)
    expect(card).to_be_visible()
    expect(card.locator('[data-metric="sold"]')).to_have_text("0 / 46")
    event_id = card.get_attribute("data-event")
    event = http.get(f"/v1/events/{event_id}").json()
    assert [(section["id"], section["kind"], section.get("capacity") or sum(row["seats"] for row in section["rows"]))
            for section in event["sections"]] == [
        ("A", "seated", 16), ("pit", "ga", 30)]
    assert event["sale_windows"][0]["name"] == "general" and event["venue"]["city"] == "Porto"

    buyer = cluster.headers(f"org-buyer-{uuid.uuid4().hex[:6]}")
    hold = http.post("/v1/holds", json={"event_id": event_id, "seats": ["A-1-1", "A-1-2", "A-1-3"]},
                     headers={**buyer, "Idempotency-Key": uuid.uuid4().hex})
    assert hold.status_code == 201, hold.text
    paid = http.post(f"/v1/holds/{hold.json()['id']}/checkout", json={"payment": {"token": "tok_visa"}},
                     headers={**buyer, "Idempotency-Key": uuid.uuid4().hex})
    assert paid.status_code == 201, paid.text
    expect(card.locator('[data-metric="sold"]')).to_have_text("3 / 46", timeout=15_000)  # without reloading
    expect(card.locator('[data-metric="orders"]')).to_have_text("1")
    screenshot(page, "organizer", False)

    page.get_by_role("button", name=f"Pause {title}").click()
    expect(page.locator("li.card", has_text=title).locator(".badge")).to_have_text("paused")
    refused = http.post("/v1/holds", json={"event_id": event_id, "section": "pit", "quantity": 1},
                        headers={**buyer, "Idempotency-Key": uuid.uuid4().hex})
    assert refused.status_code in (403, 409), refused.text
    assert problem(refused, refused.status_code, refused.json()["code"])

    page.on("dialog", lambda dialog: dialog.accept())  # "Cancel …? Every order is refunded"
    page.get_by_role("button", name=re.compile(f"^Cancel {title}")).click()
    expect(page.locator("li.card", has_text=title).locator(".badge")).to_have_text("cancelled")
    expect(page.get_by_role("button", name=re.compile(f"^(Resume|Cancel) {title}"))).to_have_count(0)
    assert http.get(f"/v1/events/{event_id}").json()["status"] == "cancelled"
