"""The bodies the API answers with, as models for `/openapi.json` only (API.md shapes).

Handlers build their bodies as dicts (router/views.py) and return them directly, so these models
never run on the hot path; their job is a truthful contract. The schemathesis suite
(tests/e2e/test_schemathesis.py) checks every response against them. They allow extra fields:
API.md lets the API add fields, and a client must ignore what it does not know.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class HoldItem(Open):
    seat: str | None = Field(description="Seat label (`A-2-17`); null for general admission")
    section: str
    price_cents: int


class Hold(Open):
    id: str
    event_id: str
    status: str = Field(description="held, payment_pending, confirmed, expired, released or failed")
    expires_at: str | None
    items: list[HoldItem]
    quantity: int
    total_cents: int
    currency: str
    order_id: str | None = None


class EventVenue(Open):
    name: str
    city: str = ""
    country: str = ""


class EventSaleWindow(Open):
    name: str = ""
    starts_at: str
    ends_at: str | None = None
    code: str | None = None


class Event(Open):
    id: str
    title: str
    category: str
    description: str
    venue: EventVenue
    starts_at: str
    ends_at: str | None
    currency: str
    hold_seconds: int
    per_person_limit: int | None
    queue: dict[str, object]
    sale_windows: list[EventSaleWindow]
    status: str
    sections: list[dict[str, object]]


class EventPage(Open):
    items: list[Event]
    next_cursor: str | None


class SectionSales(Open):
    id: str
    kind: str
    capacity: int
    sold: int
    held: int
    blocked: int
    available: int = Field(description="capacity - sold - held - blocked")
    price_cents: int
    revenue_cents: int = Field(description="The sold tickets' prices as sold (a dynamic price moves)")
    refunded: int = Field(description="tickets refunded")
    refunded_cents: int
    checked_in: int


class SalesReport(Open):
    event_id: str
    as_of: str = Field(description="When the database snapshot every figure comes from was taken")
    currency: str
    orders: int = Field(description="Confirmed orders (refunded ones are in orders_refunded)")
    orders_refunded: int
    revenue_cents: int = Field(description="Sum of confirmed orders")
    refunded_cents: int = Field(description="Sum of refunded orders")
    hold_conversion: float | None = Field(description="Holds that became orders / holds no longer open; "
                                                      "null before any hold ended")
    sections: list[SectionSales]


class AvailabilitySection(Open):
    id: str
    kind: str
    capacity: int
    available: int
    held: int
    sold: int
    price_cents: int


class Availability(Open):
    event_id: str
    total_available: int
    as_of: str
    sections: list[AvailabilitySection]


class SeatRow(Open):
    label: str
    seats: str = Field(description="One character per seat: `.` available, `h` held, `s` sold, `x` blocked")


class SeatMapSection(Open):
    id: str
    rows: list[SeatRow]


class SeatMap(Open):
    sections: list[SeatMapSection]


class Ticket(Open):
    id: str
    event_id: str
    order_id: str
    seat: str | None
    section: str
    status: str
    qr_png: str
    code: str | None = Field(None, description="The signed ticket code (owner views)")


class Order(Open):
    id: str
    event_id: str
    status: str
    total_cents: int
    currency: str
    tickets: list[Ticket]


class OrderSummary(Open):
    id: str
    status: str
    total_cents: int
    currency: str


class CheckoutResult(Open):
    order: OrderSummary
    tickets: list[Ticket]


class TicketPage(Open):
    items: list[Ticket]
    next_cursor: str | None


class Checkin(Open):
    result: str
    ticket: Ticket


class Revocation(Open):
    ticket_id: str
    status: str
    revoked_at: str | None


class RevocationPage(Open):
    event_id: str
    items: list[Revocation]
    next_cursor: str | None
    complete: bool


class AuditActor(Open):
    sub: str = Field(description="The user id of the token that made the request, or `system`")
    role: str | None = Field(description="The token's role; null for changes no request made")


class AuditSubject(Open):
    type: str = Field(description="event, order, ticket or payment")
    id: str


class AuditEntry(Open):
    id: str = Field(description="The entry's position in the log (opaque)")
    at: str
    actor: AuditActor
    action: str = Field(description="`ticket.checked_in`, `order.refunded`, `event.updated`, `charge.succeeded`, …")
    subject: AuditSubject
    from_: str | dict[str, Any] | None = Field(alias="from", description="Status (or, for an edit, the fields) before")
    to: str | dict[str, Any] = Field(description="Status (or, for an edit, the fields) after")
    request_id: str | None = Field(description="X-Request-Id of the request that made the change")
    detail: dict[str, Any] | None = Field(description="A check-in's gate; a payment's kind and amount; …")


class AuditPage(Open):
    items: list[AuditEntry] = Field(description="Oldest first")
    next_cursor: str | None


class TicketKey(Open):
    kid: str
    alg: str
    public_key: str


class TicketKeys(Open):
    keys: list[TicketKey]


class QueueStatus(Open):
    status: str = Field(description="waiting, admitted, sold_out (nothing available now; the place is kept), "
                              "waiting_list (on the waiting list of a sold-out event) or expired (not in line: "
                              "join again)")
    position: int | None = Field(None, description="waiting and waiting_list: 1 is next")
    eta_seconds: int | None = Field(None, description="waiting: position ÷ the event's admission rate")
    token: str | None = Field(None, description="admitted: send it as X-Queue-Token with POST /v1/holds")
    expires_at: str | None = Field(None, description="admitted: when the token stops admitting")


class Me(Open):
    sub: str
    role: str


class Health(Open):
    status: str


class Ready(Open):
    status: str
    components: dict[str, str]
