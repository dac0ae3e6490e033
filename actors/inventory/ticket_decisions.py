"""Deciding on tickets after the sale: refunds, transfers, check-in.

Decisions (docs/inventory.md has the reasoning):
* A refund covers the order's *refundable set*: its tickets still held by the order's buyer. A
  ticket transferred away left the set — it belongs to its recipient, and the sender can neither
  void it nor take its money back; a ticket transferred back to the buyer rejoins the set (that is
  how a recipient gives a ticket back). The refund is refused (TICKET_ALREADY_USED) if a ticket of
  the set has been checked in (a used ticket cannot go back on sale; partial refunds are an
  organizer's manual decision), and refused (TICKET_VOID) when the set is empty. Refunding closes
  the order (``refunded``): tickets outside the set stay valid and are not refundable later.
* On a cancelled event only the cancellation refunds (``RefundOrder.cancellation``; any other
  refund is EVENT_CANCELLED): it covers every ticket the order's tickets became, whoever holds them
  now and checked in or not — the event will not happen — marks them ``cancelled`` and closes the
  order; the buyer, who paid, is paid back the whole order (actors/payments.py). Check-ins and
  transfers of a cancelled event's tickets are TICKET_VOID from the moment it is cancelled,
  before the cancellation reaches their order.
* A transfer is refused with LIMIT_EXCEEDED when the recipient would pass the per-person limit;
  otherwise limits would be bypassed by buying on many accounts and transferring to one.
"""

from __future__ import annotations

from uuid import UUID

from actors.inventory.changes import (
    Change,
    CheckedIn,
    OrderStatusChanged,
    PoolCountersChanged,
    SeatsReleased,
    TicketsIssued,
    TicketStatusChanged,
)
from actors.inventory.commands import RefundOrder, TransferTicket
from actors.inventory.errors import ErrorCode
from actors.inventory.event import NOBODY, EventInventory
from actors.inventory.invariants import check_tickets
from actors.inventory.results import OrderView, Rejection, TicketView, TransferView
from actors.inventory.sales import EventStatus
from actors.inventory.tickets import (
    CANCELLED,
    CHECKED_IN,
    ORDER_REFUNDED,
    REFUNDED,
    TICKET_STATUSES,
    TRANSFERRED,
    VALID,
    OrderStatus,
    TicketStatus,
)


def _used(event: EventInventory, ticket: int) -> Rejection:
    book = event.tickets
    return Rejection(
        ErrorCode.TICKET_ALREADY_USED,
        "the ticket has been checked in",
        first_checked_in_at_s=book.checked_in_at_s[ticket],
        gate=book.gate_names[book.gate[ticket]],
    )


def _not_valid(event: EventInventory, ticket: int) -> Rejection | None:
    """Why a ticket can no longer be used or moved: its event cancelled, already checked in, or void."""
    if event.settings.status is EventStatus.CANCELLED:
        return Rejection(ErrorCode.TICKET_VOID, "the event is cancelled")
    status = event.tickets.status[ticket]
    if status == CHECKED_IN:
        return _used(event, ticket)
    if status != VALID:
        return Rejection(ErrorCode.TICKET_VOID, "the ticket was refunded or transferred")
    return None


def refund_order(
    event: EventInventory, order: int, command: RefundOrder, now_s: float
) -> tuple[OrderView, list[Change]] | Rejection:
    book = event.tickets
    if book.order_status[order] == ORDER_REFUNDED:
        return Rejection(ErrorCode.ORDER_ALREADY_REFUNDED, "the order is already refunded")
    cancelled = event.settings.status is EventStatus.CANCELLED
    if cancelled != command.cancellation:
        if cancelled:
            return Rejection(ErrorCode.EVENT_CANCELLED, "the event is cancelled: the cancellation refunds its orders")
        return Rejection(ErrorCode.VALIDATION_ERROR, "only a cancelled event's orders are refunded by cancellation")
    if cancelled:
        refunded = [ticket for ticket in book.current_tickets(order) if book.is_live(ticket)]
    else:
        buyer = book.order_buyer[order]
        tickets = [ticket for ticket in book.current_tickets(order) if book.owner[ticket] == buyer]
        for ticket in tickets:
            if book.status[ticket] == CHECKED_IN:
                return _used(event, ticket)
        refunded = [ticket for ticket in tickets if book.status[ticket] == VALID]
        if not refunded:
            return Rejection(ErrorCode.TICKET_VOID, "no ticket of this order is still held by its buyer: "
                             "transferred tickets belong to their recipients")
    to_status, to_index = (TicketStatus.CANCELLED, CANCELLED) if cancelled else (TicketStatus.REFUNDED, REFUNDED)
    changes: list[Change] = []
    # The counters of each GA pool the refund returns units to, as the refund found them.
    pools = sorted({-1 - book.seat[ticket] for ticket in refunded if book.seat[ticket] < 0})
    counters_before = [(event.held[index], event.sold[index]) for index in pools]
    for ticket in refunded:
        from_status = TICKET_STATUSES[book.status[ticket]]
        event.unsell(ticket)
        book.status[ticket] = to_index
        changes.append(
            TicketStatusChanged(
                event.event_id,
                UUID(bytes=book.ids.key(ticket)),
                from_status.value,
                to_status.value,
                command.user_id,
                now_s,
            )
        )
    book.order_status[order] = ORDER_REFUNDED
    check_tickets(event, refunded)
    seat_nos = tuple(sorted(book.seat[ticket] for ticket in refunded if book.seat[ticket] >= 0))
    view = event.order_view(order)
    if seat_nos:
        changes.append(SeatsReleased(event.event_id, seat_nos, None, view.order_id))
    for index, (held_before, sold_before) in zip(pools, counters_before, strict=True):
        pool = event.layout.sections[index]
        changes.append(
            PoolCountersChanged(
                event.event_id, pool.section_id, event.held[index], event.sold[index], held_before, sold_before
            )
        )
    changes.append(
        OrderStatusChanged(
            event.event_id,
            view.order_id,
            OrderStatus.CONFIRMED.value,
            OrderStatus.REFUNDED.value,
            command.user_id,
            now_s,
        )
    )
    return view, changes


def transfer_ticket(
    event: EventInventory, ticket: int, command: TransferTicket, now_s: float
) -> tuple[TransferView, list[Change]] | Rejection:
    book = event.tickets
    refused = _not_valid(event, ticket)
    if refused is not None:
        return refused
    if command.to_user_id == command.user_id or not command.to_user_id:
        return Rejection(ErrorCode.VALIDATION_ERROR, "transfer to another user")
    if book.ids.find(command.new_ticket_id.bytes) != -1:
        return Rejection(ErrorCode.VALIDATION_ERROR, "new ticket id already used")
    limit = event.settings.per_person_limit
    recipient = event.find_user(command.to_user_id)
    if limit is not None and event.units_of(recipient) + 1 > limit:
        return Rejection(ErrorCode.LIMIT_EXCEEDED, "the recipient would pass the per-person limit")
    if recipient == NOBODY:
        recipient = event.intern_user(command.to_user_id)
    seat_ref = book.seat[ticket]
    book.status[ticket] = TRANSFERRED
    event.user_units[book.owner[ticket]] -= 1
    price_cents = book.price[ticket]  # the recipient's ticket keeps the price it was sold at
    new_ticket = book.add_ticket(command.new_ticket_id.bytes, seat_ref, recipient, book.order[ticket], price_cents)
    event.user_units[recipient] += 1
    book.successor[ticket] = new_ticket
    if seat_ref >= 0:
        event.seat_ref[seat_ref] = new_ticket
    check_tickets(event, (ticket, new_ticket))
    old_view, new_view = event.ticket_view(ticket), event.ticket_view(new_ticket)
    changes: list[Change] = [
        TicketStatusChanged(
            event.event_id,
            old_view.ticket_id,
            TicketStatus.VALID.value,
            TicketStatus.TRANSFERRED.value,
            command.user_id,
            now_s,
        ),
        TicketsIssued(
            event.event_id,
            new_view.order_id,
            command.to_user_id,
            (new_view.ticket_id,),
            (None if seat_ref < 0 else seat_ref,),
            (new_view.section_id,),
            now_s,
            old_view.ticket_id,
            (price_cents,),
        ),
    ]
    return TransferView(old_view, new_view), changes


def check_in(
    event: EventInventory, ticket: int, gate: str, now_s: float
) -> tuple[TicketView, list[Change]] | Rejection:
    book = event.tickets
    refused = _not_valid(event, ticket)
    if refused is not None:
        return refused
    book.check_in(ticket, gate, now_s)
    check_tickets(event, (ticket,))
    view = event.ticket_view(ticket)
    changes: list[Change] = [CheckedIn(event.event_id, view.ticket_id, gate, now_s)]
    return view, changes
