"""Rebuilding an event from database rows (recovery) in bulk.

The shell reads the rows with a few large queries and hands them over as these NamedTuples
(``TicketRow._make(record)`` turns an asyncpg record into one). Loading allocates no object per
seat or per ticket: seats and tickets go straight into the event's arrays; only live holds
become objects, as they are while serving. Per-user counts and section counters are recomputed
from holds and tickets rather than trusted, and ``ShardInventory.adopt_event`` runs
``check_all`` before the event serves. Claimed seats need no rows of their own: a held seat is
named by its live hold, a sold seat by its live ticket.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple
from uuid import UUID

from actors.inventory.errors import invariant
from actors.inventory.event import EventInventory
from actors.inventory.holds import Hold, HoldStatus
from actors.inventory.layout import Layout
from actors.inventory.sales import EventSettings
from actors.inventory.seating import SOLD
from actors.inventory.tickets import (
    CHECKED_IN,
    ORDER_STATUSES,
    TICKET_STATUSES,
    OrderStatus,
    TicketStatus,
    ga_seat_ref,
)


class HoldRow(NamedTuple):
    """A live hold (``held`` or ``payment_pending``); ended holds are not loaded."""

    hold_id: UUID
    user_id: str
    status: str
    section_id: str | None  # the GA pool, for GA holds
    seat_nos: tuple[int, ...]
    quantity: int
    expires_at_s: float


class OrderRow(NamedTuple):
    order_id: UUID
    user_id: str
    status: str


class TicketRow(NamedTuple):
    """One ticket, in issue order (so a transfer's new ticket comes after the one it replaces)."""

    ticket_id: UUID
    order_id: UUID
    user_id: str
    seat_no: int | None
    section_id: str
    status: str
    checked_in_at_s: float | None = None
    gate: str | None = None
    replaces: UUID | None = None


def load_event(
    event_id: UUID,
    layout: Layout,
    settings: EventSettings,
    holds: Iterable[HoldRow],
    orders: Iterable[OrderRow],
    tickets: Iterable[TicketRow],
) -> tuple[EventInventory, list[Hold]]:
    """The event as the rows describe it, and its live holds (for the shard's index and heap)."""
    event = EventInventory(event_id, layout, settings)
    _load_tickets(event, list(orders), tickets)
    live = [_load_hold(event, row) for row in holds]
    return event, live


def _load_hold(event: EventInventory, row: HoldRow) -> Hold:
    pool = None if row.section_id is None else event.layout.section_by_id[row.section_id]
    user = event.intern_user(row.user_id)
    hold = Hold(row.hold_id, event, user, pool, tuple(row.seat_nos), row.quantity, row.expires_at_s)
    hold.status = HoldStatus(row.status)
    invariant(hold.live, "hold %s loaded in final status %s", row.hold_id, row.status)
    event.attach(hold)
    return hold


def _load_tickets(event: EventInventory, orders: list[OrderRow], rows: Iterable[TicketRow]) -> None:
    book = event.tickets
    originals: dict[UUID, list[TicketRow]] = {order.order_id: [] for order in orders}
    replacements: list[TicketRow] = []
    for row in rows:
        (originals[row.order_id] if row.replaces is None else replacements).append(row)
    for order in orders:
        members = originals[order.order_id]
        serial = book.add_order(order.order_id.bytes, event.intern_user(order.user_id), len(book), len(members))
        book.order_status[serial] = ORDER_STATUSES.index(OrderStatus(order.status))
        for row in members:
            _add_ticket(event, row, serial)
    for row in replacements:
        replaced = book.ids.find(row.replaces.bytes) if row.replaces is not None else -1
        invariant(replaced != -1, "ticket %s replaces an unknown ticket", row.ticket_id)
        book.successor[replaced] = _add_ticket(event, row, book.order[replaced])


def _add_ticket(event: EventInventory, row: TicketRow, order: int) -> int:
    book = event.tickets
    section = event.layout.section_by_id[row.section_id]
    seat_ref = ga_seat_ref(section.index) if row.seat_no is None else row.seat_no
    owner = event.intern_user(row.user_id)
    serial = book.add_ticket(row.ticket_id.bytes, seat_ref, owner, order)
    status = TICKET_STATUSES.index(TicketStatus(row.status))
    if status == CHECKED_IN:
        book.check_in(serial, row.gate or "", row.checked_in_at_s or 0.0)
    book.status[serial] = status
    if book.is_live(serial):
        event.user_units[owner] += 1
        event.sold[section.index] += 1
        if row.seat_no is not None:
            event.seat_status[row.seat_no] = SOLD
            event.seat_ref[row.seat_no] = serial
    return serial
