"""Rebuilding an event from database rows (recovery) in bulk.

The shell reads an event's orders and original tickets *column-wise*: ids back to back in one
``bytes``, statuses one byte each, seat numbers in one array (:class:`OrderColumns`,
:class:`TicketColumns`). Live holds and replacement tickets (transfers, rare) stay rows
(NamedTuples). Loading allocates no object per seat or per ticket: seats and tickets go straight
into the event's arrays; only live holds become objects, as they are while serving. Per-user
counts and section counters are recomputed from holds and tickets rather than trusted, and
``ShardInventory.adopt_event`` runs ``check_all`` before the event serves. Claimed seats need no
rows of their own: a held seat is named by its live hold, a sold seat by its live ticket.

Why columns: rebuilding a 1M-seat event (600k tickets, 150k orders, 25k live holds) from one
NamedTuple per ticket took 3.8 s, and asyncpg decoding ten values per ticket row most of the 5 s
of SQL before it (recovery bench, 2-core box). From columns it takes 1.2 s, 0.3 s of which is
``check_all`` (0.37 → 0.11 s at 100k): users are deduplicated with ``dict.fromkeys``, live
tickets counted with ``Counter`` over ``compress``, columns copied whole, all in C; what stays in
Python is one hash-and-probe per id (``KeyTable.from_keys``) and one store per sold seat.
``load_event`` keeps the row form for the tests, the reference projection and the memory
benchmark, and converts it to columns, so both forms go through the same loader.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain, compress, repeat
from typing import NamedTuple
from uuid import UUID

from actors.inventory.compact import KEY_BYTES, KeyTable, user_key
from actors.inventory.errors import invariant
from actors.inventory.event import USER_LOAD_MAX, EventInventory
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

# Status text → its index in the status tuples (what the status columns store).
TICKET_STATUS_INDEX = {status.value: index for index, status in enumerate(TICKET_STATUSES)}
ORDER_STATUS_INDEX = {status.value: index for index, status in enumerate(ORDER_STATUSES)}
# bytes.translate table: a ticket status byte → 1 if the ticket is live (valid or checked in).
_LIVE_STATUS = bytes(1 if index <= CHECKED_IN else 0 for index in range(256))


class HoldRow(NamedTuple):
    """A live hold (``held`` or ``payment_pending``); ended holds are not loaded."""

    hold_id: UUID
    user_id: str
    status: str
    section_id: str | None  # the GA pool, for GA holds
    seat_nos: tuple[int, ...]
    quantity: int
    expires_at_s: float
    # The prices the hold keeps: per item if given, else total_cents / quantity (HoldCreated).
    # Both None: rows from before holds kept prices, when every price was fixed: the section's.
    total_cents: int | None = None
    item_prices_cents: tuple[int, ...] | None = None


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
    price_cents: int | None = None  # None: the section's price (rows from before tickets kept one)


class OrderColumns(NamedTuple):
    """An event's orders in serial order (order *i* becomes serial *i*)."""

    ids: bytes  # UUID.bytes of each order, back to back (16 bytes each)
    buyers: Sequence[str]
    statuses: bytes  # one byte per order: its index in ORDER_STATUSES


class TicketColumns(NamedTuple):
    """An event's original tickets (not transfers' replacements), grouped by order: each order's
    tickets form one run, and the runs come in the orders' serial order (an order without
    tickets has no run). Ticket *i* becomes serial *i*."""

    ids: bytes  # UUID.bytes of each ticket, back to back
    order_ids: bytes  # UUID.bytes of each ticket's order, back to back
    owners: Sequence[str]
    seat_refs: Sequence[int]  # the seat_no, or ga_seat_ref(section index) for a GA unit
    sections: Sequence[int]  # the index of the section the ticket's row names
    statuses: bytes  # one byte per ticket: its index in TICKET_STATUSES
    # (ticket id bytes, checked_in_at_s, gate) of every ticket whose status is checked_in
    checkins: Sequence[tuple[bytes, float, str]] = ()
    # The price each ticket was sold at; None: each section's price in the layout (rows written
    # before tickets kept their price, when every price was fixed).
    prices: Sequence[int] | None = None


def load_event(
    event_id: UUID,
    layout: Layout,
    settings: EventSettings,
    holds: Iterable[HoldRow],
    orders: Iterable[OrderRow],
    tickets: Iterable[TicketRow],
) -> tuple[EventInventory, list[Hold]]:
    """The event as the rows describe it, and its live holds (for the shard's index and heap).

    Orders keep the given order; each order's original tickets keep their given order.
    """
    order_columns, ticket_columns, replacements = columns_from_rows(layout, list(orders), tickets)
    return load_event_columns(event_id, layout, settings, holds, order_columns, ticket_columns, replacements)


def columns_from_rows(
    layout: Layout, orders: list[OrderRow], rows: Iterable[TicketRow]
) -> tuple[OrderColumns, TicketColumns, list[TicketRow]]:
    """The column form of order and ticket rows, plus the replacement tickets (in row order)."""
    originals: dict[UUID, list[TicketRow]] = {order.order_id: [] for order in orders}
    replacements: list[TicketRow] = []
    for row in rows:
        if row.replaces is not None:
            replacements.append(row)
        else:
            members = originals.get(row.order_id)
            invariant(members is not None, "ticket %s belongs to an unknown order %s", row.ticket_id, row.order_id)
            assert members is not None  # for mypy: invariant() raised otherwise
            members.append(row)
    grouped = [row for order in orders for row in originals[order.order_id]]
    checkins = [
        (row.ticket_id.bytes, row.checked_in_at_s or 0.0, row.gate or "")
        for row in grouped
        if TicketStatus(row.status) is TicketStatus.CHECKED_IN
    ]
    order_columns = OrderColumns(
        b"".join(order.order_id.bytes for order in orders),
        [order.user_id for order in orders],
        bytes(ORDER_STATUS_INDEX[OrderStatus(order.status).value] for order in orders),
    )
    ticket_columns = TicketColumns(
        b"".join(row.ticket_id.bytes for row in grouped),
        b"".join(row.order_id.bytes for row in grouped),
        [row.user_id for row in grouped],
        array("i", [_seat_ref(layout, row) for row in grouped]),
        array("i", [layout.section_by_id[row.section_id].index for row in grouped]),
        bytes(TICKET_STATUS_INDEX[TicketStatus(row.status).value] for row in grouped),
        checkins,
        array("i", [_ticket_price(layout, row) for row in grouped]),
    )
    return order_columns, ticket_columns, replacements


def load_event_columns(
    event_id: UUID,
    layout: Layout,
    settings: EventSettings,
    holds: Iterable[HoldRow],
    orders: OrderColumns,
    tickets: TicketColumns,
    replacements: Iterable[TicketRow] = (),
) -> tuple[EventInventory, list[Hold]]:
    """Like :func:`load_event`, from the column form (what the shell's loader reads).

    Order, ticket and user ids must be distinct (primary keys in Postgres); a ticket run out of
    its order's sequence, an unknown status or a check-in of a ticket that is not checked in is
    refused here, and whatever the columns claim is recounted by ``check_all`` on adoption.
    """
    event = EventInventory(event_id, layout, settings)
    buyers, owners = _load_users(event, orders.buyers, tickets.owners)
    _load_orders(event, orders, buyers, tickets.order_ids)
    _load_tickets(event, tickets, owners)
    for row in replacements:
        _load_replacement(event, row)
    live = [_load_hold(event, row) for row in holds]
    return event, live


def _load_users(event: EventInventory, buyers: Sequence[str], owners: Sequence[str]) -> tuple[array[int], array[int]]:
    """Intern every buyer and ticket owner; returns the user serials of both columns.

    ``dict.fromkeys`` deduplicates in C (first appearance wins and becomes the serial), so only
    distinct users pay for a digest; serials are then looked up with ``map`` in C as well.
    """
    names = dict.fromkeys(buyers)
    names.update(dict.fromkeys(owners))
    invariant(len(event.users) == 0, "users load into an empty table")
    event.users = KeyTable.from_keys(b"".join([user_key(name) for name in names]), USER_LOAD_MAX)
    event.user_units = array("i", [0]) * len(names)
    serials = {name: serial for serial, name in enumerate(names)}
    return array("i", map(serials.__getitem__, buyers)), array("i", map(serials.__getitem__, owners))


def _load_orders(event: EventInventory, orders: OrderColumns, buyers: array[int], ticket_order_ids: bytes) -> None:
    """Add the orders, each with the serial range of its original tickets.

    The tickets' ``order_ids`` must be runs in the orders' sequence; a run of an order that is not
    the current or a later one, or of no order at all, is refused. Each run is measured with
    ``bytes.startswith`` (a C compare, no slice object) per ticket.
    """
    order_count = len(orders.ids) // KEY_BYTES
    invariant(len(buyers) == order_count == len(orders.statuses), "order columns differ in length")
    invariant(not orders.statuses or max(orders.statuses) < len(ORDER_STATUSES), "unknown order status")
    firsts, counts = array("i"), array("i")
    order_ids, position = orders.ids, 0
    for offset in range(0, len(order_ids), KEY_BYTES):
        key, start = order_ids[offset : offset + KEY_BYTES], position
        while ticket_order_ids.startswith(key, position):
            position += KEY_BYTES
        firsts.append(start // KEY_BYTES)
        counts.append((position - start) // KEY_BYTES)
    invariant(position == len(ticket_order_ids), "ticket %d: its order is unknown or out of sequence",
              position // KEY_BYTES)
    book = event.tickets
    invariant(len(book.order_ids) == 0, "orders load into an empty book")
    book.order_ids = KeyTable.from_keys(order_ids)
    book.order_buyer, book.order_first, book.order_count = buyers, firsts, counts
    book.order_status = bytearray(orders.statuses)


def _load_tickets(event: EventInventory, tickets: TicketColumns, owners: array[int]) -> None:
    """Set the book's ticket columns, then apply the live tickets to seats and counters."""
    book = event.tickets
    count = len(tickets.ids) // KEY_BYTES
    invariant(
        len(tickets.order_ids) // KEY_BYTES == len(owners) == len(tickets.seat_refs) == len(tickets.sections)
        == len(tickets.statuses) == count,
        "ticket columns differ in length",
    )
    invariant(not tickets.statuses or max(tickets.statuses) < len(TICKET_STATUSES), "unknown ticket status")
    invariant(len(book) == 0, "original tickets load into an empty book")
    book.ids = KeyTable.from_keys(tickets.ids)
    # Each order's tickets are one run (checked by _load_orders), so the order column repeats
    # each order's serial for its count, built in C.
    book.order = array("i", chain.from_iterable(map(repeat, range(len(book.order_count)), book.order_count)))
    book.seat, book.owner, book.status = array("i", tickets.seat_refs), owners, bytearray(tickets.statuses)
    if tickets.prices is None:
        section_prices = [section.price_cents for section in event.layout.sections]
        book.price = array("i", map(section_prices.__getitem__, tickets.sections))
    else:
        invariant(len(tickets.prices) == count, "ticket columns differ in length")
        book.price = array("i", tickets.prices)
    book.checked_in_at_s = array("d", [0.0]) * count
    book.gate = array("H", [0]) * count
    for key, at_s, gate in tickets.checkins:
        serial = book.ids.find(key)
        checked_in = serial != -1 and book.status[serial] == CHECKED_IN
        invariant(checked_in, "ticket %r: a check-in of an unknown or not checked-in ticket", key)
        book.check_in(serial, gate, at_s)
    # Live tickets (valid or checked in) count for their owner and section and own their seat.
    # Counting goes through Counter over compress() in C; only the seats take a Python loop.
    live = book.status.translate(_LIVE_STATUS)
    units, sold = event.user_units, event.sold
    for owner, owned in Counter(compress(owners, live)).items():
        units[owner] += owned
    for section, sold_here in Counter(compress(tickets.sections, live)).items():
        sold[section] += sold_here
    seat_status, seat_ref = event.seat_status, event.seat_ref
    for serial, seat in zip(compress(range(count), live), compress(book.seat, live), strict=True):
        if seat >= 0:
            seat_status[seat] = SOLD
            seat_ref[seat] = serial


def _ticket_price(layout: Layout, row: TicketRow) -> int:
    return layout.section_by_id[row.section_id].price_cents if row.price_cents is None else row.price_cents


def _seat_ref(layout: Layout, row: TicketRow) -> int:
    return ga_seat_ref(layout.section_by_id[row.section_id].index) if row.seat_no is None else row.seat_no


def _load_replacement(event: EventInventory, row: TicketRow) -> None:
    """A transfer's new ticket: after every original, linked from the ticket it replaces."""
    book = event.tickets
    replaced = book.ids.find(row.replaces.bytes) if row.replaces is not None else -1
    invariant(replaced != -1, "ticket %s replaces an unknown ticket", row.ticket_id)
    book.successor[replaced] = _add_ticket(event, row, book.order[replaced])


def _load_hold(event: EventInventory, row: HoldRow) -> Hold:
    pool = None if row.section_id is None else event.layout.section_by_id[row.section_id]
    user = event.intern_user(row.user_id)
    hold = Hold(row.hold_id, event, user, pool, tuple(row.seat_nos), row.quantity, row.expires_at_s,
                _hold_prices(event, row))
    hold.status = HoldStatus(row.status)
    invariant(hold.live, "hold %s loaded in final status %s", row.hold_id, row.status)
    event.attach(hold)
    return hold


def _hold_prices(event: EventInventory, row: HoldRow) -> int | tuple[int, ...]:
    """The prices a live hold keeps, as ``Hold.prices_cents`` holds them."""
    if row.item_prices_cents is not None:
        invariant(len(row.item_prices_cents) == row.quantity, "hold %s: one price per item", row.hold_id)
        return tuple(row.item_prices_cents)
    layout = event.layout
    sections = {layout.section_of(seat_no).index for seat_no in row.seat_nos}
    if row.total_cents is not None and len(sections) <= 1:  # one section: one price (HoldCreated)
        invariant(row.quantity > 0 and row.total_cents % row.quantity == 0, "hold %s: total_cents does not divide "
                  "into equal prices", row.hold_id)
        return row.total_cents // row.quantity
    # A row from before holds kept prices (no total, or seats across sections without their
    # prices): every price was fixed then, the layout's.
    if row.section_id is not None:
        return layout.section_by_id[row.section_id].price_cents
    prices = tuple([layout.section_of(seat_no).price_cents for seat_no in row.seat_nos])
    return prices[0] if len(set(prices)) == 1 else prices


def _add_ticket(event: EventInventory, row: TicketRow, order: int) -> int:
    book = event.tickets
    section = event.layout.section_by_id[row.section_id]
    seat_ref = ga_seat_ref(section.index) if row.seat_no is None else row.seat_no
    owner = event.intern_user(row.user_id)
    serial = book.add_ticket(row.ticket_id.bytes, seat_ref, owner, order, _ticket_price(event.layout, row))
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
