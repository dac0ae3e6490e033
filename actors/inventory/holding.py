"""Deciding holds: placing them, pinning them for checkout, selling, failing, ending them.

Every function checks first and mutates after, so a rejection leaves memory untouched and
produces no change records (the one exception: a checkout that finds its hold past
``expires_at`` expires it on the spot, and reports both the expiry's changes and HOLD_EXPIRED).
"""

from __future__ import annotations

from actors.inventory.changes import (
    Change,
    HoldCreated,
    HoldStatusChanged,
    OrderCreated,
    PoolCountersChanged,
    SeatsClaimed,
    SeatsReleased,
    SeatsSold,
    TicketsIssued,
)
from actors.inventory.commands import (
    ConfirmCheckout,
    HoldBestAvailable,
    HoldCommand,
    HoldGeneralAdmission,
    HoldSeats,
)
from actors.inventory.compact import user_key
from actors.inventory.errors import ErrorCode
from actors.inventory.event import NOBODY, EventInventory
from actors.inventory.holds import Hold, HoldStatus
from actors.inventory.invariants import check_hold, check_tickets
from actors.inventory.layout import NO_SEAT, Section
from actors.inventory.results import OrderView, Rejection
from actors.inventory.sales import sale_rejection
from actors.inventory.seating import AVAILABLE, advance_open_row, pick_adjacent, pick_best
from actors.inventory.tickets import ga_seat_ref

Placed = tuple[Hold, list[Change]] | Rejection


def hold_seats(event: EventInventory, command: HoldSeats, now_s: float, hold_items_max: int) -> Placed:
    """All or nothing: any unavailable seat and nothing is held; the rejection names them all."""
    admitted = _admit(event, command.user_id, len(command.seats), command.presale_code, now_s, hold_items_max)
    if isinstance(admitted, Rejection):
        return admitted
    parse = event.layout.parse_label
    seat_nos = tuple(map(parse, command.seats))
    if NO_SEAT in seat_nos:
        unknown = [label for label, seat_no in zip(command.seats, seat_nos, strict=True) if seat_no == NO_SEAT]
        return Rejection(ErrorCode.UNKNOWN_SEAT, f"unknown seats: {', '.join(unknown)}")
    if len(set(seat_nos)) != len(seat_nos):
        return Rejection(ErrorCode.VALIDATION_ERROR, "a seat is listed twice")
    status = event.seat_status
    unavailable = tuple(
        label for label, seat_no in zip(command.seats, seat_nos, strict=True) if status[seat_no] != AVAILABLE
    )
    if unavailable:
        return Rejection(ErrorCode.SEATS_UNAVAILABLE, "some seats are not available", unavailable=unavailable)
    return _take(event, command, admitted, None, seat_nos, len(seat_nos), now_s)


def hold_pool(event: EventInventory, command: HoldGeneralAdmission, now_s: float, hold_items_max: int) -> Placed:
    pool = event.layout.section_by_id.get(command.section_id)
    if pool is None or pool.seated:
        return Rejection(ErrorCode.VALIDATION_ERROR, f"no GA pool {command.section_id!r}")
    admitted = _admit(event, command.user_id, command.quantity, command.presale_code, now_s, hold_items_max)
    if isinstance(admitted, Rejection):
        return admitted
    available = event.available(pool)
    if available < command.quantity:
        return Rejection(ErrorCode.INSUFFICIENT_INVENTORY, f"only {available} left", available=available)
    return _take(event, command, admitted, pool, (), command.quantity, now_s)


def hold_best(event: EventInventory, command: HoldBestAvailable, now_s: float, hold_items_max: int) -> Placed:
    """The best seats: lowest row first, then closest to the row's centre (seating.py)."""
    section = event.layout.section_by_id.get(command.section_id)
    if section is None or not section.seated:
        return Rejection(ErrorCode.VALIDATION_ERROR, f"no seated section {command.section_id!r}")
    quantity = command.quantity
    admitted = _admit(event, command.user_id, quantity, command.presale_code, now_s, hold_items_max)
    if isinstance(admitted, Rejection):
        return admitted
    available = event.available(section)
    if available < quantity:
        return Rejection(ErrorCode.INSUFFICIENT_INVENTORY, f"only {available} left", available=available)
    index = section.index
    first_row = event.open_row[index] = advance_open_row(event.seat_status, section, event.open_row[index])
    picker = pick_adjacent if command.adjacent else pick_best
    seat_nos = picker(event.seat_status, section, quantity, first_row)
    if seat_nos is None:
        # Enough seats, but not side by side. Same code, so clients need one branch; `available`
        # still counts the section's free seats and the detail says why.
        return Rejection(
            ErrorCode.INSUFFICIENT_INVENTORY, f"no {quantity} adjacent seats in one row", available=available
        )
    return _take(event, command, admitted, None, tuple(seat_nos), quantity, now_s)


def _admit(
    event: EventInventory,
    user_id: str,
    quantity: int,
    presale_code: str | None,
    now_s: float,
    hold_items_max: int,
) -> tuple[bytes, int] | Rejection:
    """The checks every hold passes first, in API order (422, then 403, then 409 limit).

    Returns the user's key and serial (NOBODY if the user has nothing at this event yet).
    """
    if not 1 <= quantity <= hold_items_max:
        return Rejection(ErrorCode.VALIDATION_ERROR, f"a hold takes 1 to {hold_items_max} items")
    sale_error = sale_rejection(event.settings, now_s, presale_code)
    if sale_error is not None:
        return Rejection(sale_error, "the event is not on sale for this buyer now")
    key = user_key(user_id)
    user = event.users.find(key)
    limit = event.settings.per_person_limit
    if limit is not None and (0 if user == NOBODY else event.user_units[user]) + quantity > limit:
        return Rejection(ErrorCode.LIMIT_EXCEEDED, f"at most {limit} tickets per person for this event")
    return key, user


def _take(
    event: EventInventory,
    command: HoldCommand,
    admitted: tuple[bytes, int],
    pool: Section | None,
    seat_nos: tuple[int, ...],
    quantity: int,
    now_s: float,
) -> tuple[Hold, list[Change]]:
    key, user = admitted
    if user == NOBODY:
        user = event.add_user(key)
    hold = Hold(command.hold_id, event, user, pool, seat_nos, quantity, now_s + event.settings.hold_seconds)
    event.attach(hold)
    check_hold(event, hold)
    return hold, _created_changes(event, hold, command.user_id, now_s)


def _created_changes(event: EventInventory, hold: Hold, user_id: str, now_s: float) -> list[Change]:
    pool = hold.pool
    total_cents = (
        pool.price_cents * hold.quantity
        if pool is not None
        else sum(event.layout.section_of(seat_no).price_cents for seat_no in hold.seat_nos)
    )
    created = HoldCreated(
        event.event_id,
        hold.hold_id,
        user_id,
        hold.kind,
        None if pool is None else pool.section_id,
        hold.seat_nos,
        hold.quantity,
        total_cents,
        hold.expires_at_s,
        now_s,
    )
    if pool is None:
        return [created, SeatsClaimed(event.event_id, hold.hold_id, hold.seat_nos)]
    return [created, _pool_counters(event, pool)]


def _pool_counters(event: EventInventory, pool: Section) -> PoolCountersChanged:
    return PoolCountersChanged(event.event_id, pool.section_id, event.held[pool.index], event.sold[pool.index])


def end_hold(hold: Hold, to_status: HoldStatus, actor: str, now_s: float) -> list[Change]:
    """Release a live hold's inventory and move it to a final status (expired, released, failed)."""
    event = hold.event
    from_status = hold.status
    hold.status = to_status
    event.detach(hold, sold=False)
    check_hold(event, hold)
    released: Change = (
        _pool_counters(event, hold.pool) if hold.pool is not None else SeatsReleased(event.event_id, hold.seat_nos)
    )
    return [
        HoldStatusChanged(event.event_id, hold.hold_id, from_status, to_status, actor, now_s),
        released,
    ]


def pin_hold(hold: Hold, actor: str, now_s: float) -> list[Change]:
    hold.status = HoldStatus.PAYMENT_PENDING
    return [
        HoldStatusChanged(
            hold.event.event_id,
            hold.hold_id,
            HoldStatus.HELD,
            HoldStatus.PAYMENT_PENDING,
            actor,
            now_s,
        )
    ]


def sell_hold(hold: Hold, command: ConfirmCheckout, now_s: float) -> tuple[OrderView, list[Change]] | Rejection:
    """Confirm a pinned hold: one order, one ticket per seat or GA unit, inventory sold."""
    event, book = hold.event, hold.event.tickets
    ticket_keys = [ticket_id.bytes for ticket_id in command.ticket_ids]
    if len(ticket_keys) != hold.quantity or len(set(ticket_keys)) != len(ticket_keys):
        return Rejection(ErrorCode.VALIDATION_ERROR, f"need {hold.quantity} distinct ticket ids")
    if any(book.ids.find(key) != -1 for key in ticket_keys) or book.order_ids.find(command.order_id.bytes) != -1:
        return Rejection(ErrorCode.VALIDATION_ERROR, "order or ticket id already used")
    first = len(book)
    order = book.add_order(command.order_id.bytes, hold.user, first, hold.quantity)
    pool = hold.pool
    seat_refs = [ga_seat_ref(pool.index)] * hold.quantity if pool is not None else hold.seat_nos
    for key, seat_ref in zip(ticket_keys, seat_refs, strict=True):
        book.add_ticket(key, seat_ref, hold.user, order)
    event.sell(hold, first)
    event.detach(hold, sold=True)
    hold.status = HoldStatus.CONFIRMED
    hold.order_id = command.order_id
    check_hold(event, hold)
    check_tickets(event, range(first, first + hold.quantity))
    view = event.order_view(order)
    event_id = event.event_id
    changes: list[Change] = [
        HoldStatusChanged(
            event_id,
            hold.hold_id,
            HoldStatus.PAYMENT_PENDING,
            HoldStatus.CONFIRMED,
            command.user_id,
            now_s,
        ),
        OrderCreated(event_id, command.order_id, hold.hold_id, command.user_id, view.total_cents, view.currency, now_s),
        TicketsIssued(
            event_id,
            command.order_id,
            command.user_id,
            command.ticket_ids,
            tuple(None if pool is not None else seat_no for seat_no in seat_refs),
            tuple(ticket.section_id for ticket in view.tickets),
            now_s,
        ),
        _pool_counters(event, pool)
        if pool is not None
        else SeatsSold(event_id, hold.hold_id, command.order_id, hold.seat_nos),
    ]
    return view, changes
