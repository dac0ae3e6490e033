"""Webhooks without a server: which URLs may receive them, the retry schedule, and which change
records become which outbox rows (`shards.outbox.fold`, pure)."""

from __future__ import annotations

import uuid

import pytest

from actors.inventory.changes import (
    CheckedIn,
    EventStatusChanged,
    HoldStatusChanged,
    OrderCreated,
    OrderStatusChanged,
    TicketsIssued,
    TicketStatusChanged,
)
from cluster.settings import Settings
from router.webhook_relay import WebhookRelay
from router.webhooks_api import new_secret, url_problem
from shards import outbox

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("url", "loopback_http", "accepted"), [
    ("https://hooks.example.com/in", False, True),
    ("https://127.0.0.1:8443/in", False, True),
    ("http://127.0.0.1:8080/in", True, True),
    ("http://localhost/in", True, True),
    ("http://[::1]/in", True, True),
    # Negative controls: plain http elsewhere, or to loopback without the setting; other schemes.
    ("http://127.0.0.1:8080/in", False, False),
    ("http://hooks.example.com/in", True, False),
    ("ftp://hooks.example.com/in", True, False),
    ("file:///etc/passwd", True, False),
    ("https://user:secret@hooks.example.com/in", False, False),
    ("https://hooks.example.com/in put", False, False),
    ("https:///in", False, False),
    ("https://hooks.example.com:99999/in", False, False),
])
def test_url_validation(url: str, loopback_http: bool, accepted: bool) -> None:
    assert (url_problem(url, loopback_http_allowed=loopback_http, url_chars_max=2048) is None) == accepted


def test_a_url_longer_than_the_setting_is_refused() -> None:
    url = "https://hooks.example.com/" + "a" * 100
    assert url_problem(url, loopback_http_allowed=False, url_chars_max=len(url)) is None
    assert url_problem(url, loopback_http_allowed=False, url_chars_max=len(url) - 1) is not None


def test_secrets_are_standard_webhooks_secrets() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second


def test_retries_back_off_exponentially_up_to_the_ceiling() -> None:
    relay = WebhookRelay.__new__(WebhookRelay)
    relay.settings = Settings(webhook_retry_base_s=5.0, webhook_retry_max_s=60.0)
    assert [relay.backoff_s(attempt) for attempt in range(1, 7)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]


def test_change_records_become_outbox_rows_in_order() -> None:
    event, order, hold = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    tickets = (uuid.uuid4(), uuid.uuid4())
    new_ticket = uuid.uuid4()
    changes = [
        HoldStatusChanged(event, hold, "held", "payment_pending", "ana", 1.0),  # no event for a hold
        OrderCreated(event, order, hold, "ana", 2000, "EUR", 2.0),
        TicketsIssued(event, order, "ana", tickets, (1, 2), ("A", "A"), 2.0),
        TicketStatusChanged(event, tickets[0], "valid", "transferred", "ana", 3.0),
        TicketsIssued(event, order, "ben", (new_ticket,), (1,), ("A",), 3.0, tickets[0]),
        CheckedIn(event, new_ticket, "north", 4.0),
        TicketStatusChanged(event, tickets[1], "valid", "refunded", "ana", 5.0),  # the order's refund says it
        OrderStatusChanged(event, order, "confirmed", "refunded", "ana", 5.0),
        TicketStatusChanged(event, tickets[1], "refunded", "cancelled", "system", 6.0),
        EventStatusChanged(event, "on_sale", "paused", "org", 6.0),  # not a webhook event
        EventStatusChanged(event, "paused", "cancelled", "org", 7.0),
    ]
    rows: list[outbox.OutboxRow] = []
    orders: dict[int, dict[str, object]] = {}
    for change in changes:
        outbox.fold(rows, orders, change)
    assert [row[1] for row in rows] == ["order.confirmed", "ticket.transferred", "ticket.checked_in",
                                        "order.refunded", "ticket.cancelled", "event.cancelled"]
    assert all(row[0] == event for row in rows)
    assert rows[0][2]["ticket_ids"] == [str(ticket) for ticket in tickets]
    assert rows[1][2] == {"ticket_id": str(tickets[0]), "new_ticket_id": str(new_ticket), "event_id": str(event),
                          "order_id": str(order), "to_user_id": "ben", "transferred_at": "1970-01-01T00:00:03Z"}
    assert set(outbox.TOPICS) >= {row[1] for row in rows}
