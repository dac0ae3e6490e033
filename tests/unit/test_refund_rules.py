"""Who may refund what after tickets moved (issue 10, defect 6; docs/tickets-and-payments.md).

The rule: a refund covers the order's tickets still held by its buyer. A ticket transferred away
belongs to its recipient — the sender can neither void it by refunding the order nor get its
money back — and a ticket transferred back to the buyer is refundable again. Each test opens with
the scenario it proves; the first is the exploit of the defect, which refunded the recipient's
ticket to the sender.
"""

from __future__ import annotations

import dataclasses
import uuid
from itertools import count

import pytest

from actors.inventory.changes import EventSoldOut
from actors.inventory.commands import (
    BeginCheckout,
    ChangeEventStatus,
    CheckIn,
    ConfirmCheckout,
    HoldSeats,
    RefundOrder,
    TransferTicket,
)
from actors.inventory.core import ShardInventory
from actors.inventory.errors import ErrorCode
from actors.inventory.invariants import check_all
from actors.inventory.layout import Layout, RowSpec, SeatedSectionSpec
from actors.inventory.results import (
    EventStatusView,
    HoldView,
    OrderView,
    Outcome,
    Rejection,
    TicketView,
    TransferView,
)
from actors.inventory.sales import EventSettings, EventStatus
from actors.inventory.tickets import TicketStatus
from actors.payments import refunded_cents
from tests.core_limits import core_limits

pytestmark = pytest.mark.unit

EVENT = uuid.UUID(int=1)
PRICE_CENTS = 1_000
_ids = count(5000)


def new_id() -> uuid.UUID:
    return uuid.UUID(int=next(_ids))


def inventory() -> ShardInventory:
    shard = ShardInventory(core_limits(items_max=6))
    shard.create_event(EVENT, Layout((SeatedSectionSpec("A", PRICE_CENTS, (RowSpec("1", 6),)),)), EventSettings())
    return shard


def buy(shard: ShardInventory, user: str, *seats: str) -> OrderView:
    held = shard.apply(HoldSeats(EVENT, user, new_id(), seats), 0.0).result
    assert isinstance(held, HoldView)
    assert isinstance(shard.apply(BeginCheckout(user, held.hold_id), 1.0).result, HoldView)
    order = shard.apply(ConfirmCheckout(user, held.hold_id, new_id(), tuple(new_id() for _ in seats)), 2.0).result
    assert isinstance(order, OrderView)
    return order


def transfer(shard: ShardInventory, user: str, ticket: TicketView, to: str) -> TicketView:
    moved = shard.apply(TransferTicket(user, ticket.ticket_id, to, new_id()), 3.0).result
    assert isinstance(moved, TransferView)
    return moved.new_ticket


def code(outcome: Outcome) -> ErrorCode | None:
    return outcome.result.code if isinstance(outcome.result, Rejection) else None


def seat_map(shard: ShardInventory) -> str:
    rows = shard.seat_map(EVENT, "A")
    assert rows is not None
    return rows[0].seats


def test_a_transferred_ticket_survives_the_senders_refund() -> None:
    """ana buys two seats, gives one to ben, refunds the order: only her seat is refunded and goes
    back on sale; ben's ticket stays valid and still admits him."""
    shard = inventory()
    order = buy(shard, "ana", "A-1-1", "A-1-2")
    bens = transfer(shard, "ana", order.tickets[1], "ben")
    refunded = shard.apply(RefundOrder("ana", order.order_id), 4.0).result
    assert isinstance(refunded, OrderView) and refunded.status == "refunded"
    statuses = {ticket.ticket_id: ticket.status for ticket in refunded.tickets}
    assert statuses == {order.tickets[0].ticket_id: "refunded", order.tickets[1].ticket_id: "transferred"}
    assert seat_map(shard) == ".s...."
    assert isinstance(shard.apply(CheckIn(bens.ticket_id, "north"), 5.0).result, TicketView)


def test_an_order_whose_tickets_were_all_given_away_cannot_be_refunded() -> None:
    """Nothing of the order is the buyer's any more: TICKET_VOID, and nothing changes — not even
    by the organizer, who cancels tickets through the event, not through someone else's order."""
    shard = inventory()
    order = buy(shard, "ana", "A-1-1")
    transfer(shard, "ana", order.tickets[0], "ben")
    assert code(shard.apply(RefundOrder("ana", order.order_id), 4.0)) is ErrorCode.TICKET_VOID
    assert code(shard.apply(RefundOrder("org", order.order_id, by_organizer=True), 4.0)) is ErrorCode.TICKET_VOID
    assert seat_map(shard) == "s....."


def test_the_recipient_gives_a_ticket_back_by_transferring_it_to_the_buyer() -> None:
    """ben returns the ticket to ana; it is hers again, so her refund covers it."""
    shard = inventory()
    order = buy(shard, "ana", "A-1-1")
    bens = transfer(shard, "ana", order.tickets[0], "ben")
    assert code(shard.apply(RefundOrder("ben", order.order_id), 4.0)) is ErrorCode.ORDER_NOT_FOUND
    back = transfer(shard, "ben", bens, "ana")
    refunded = shard.apply(RefundOrder("ana", order.order_id), 5.0).result
    assert isinstance(refunded, OrderView) and [t.ticket_id for t in refunded.tickets] == [back.ticket_id]
    assert [t.status for t in refunded.tickets] == ["refunded"] and seat_map(shard) == "......"


def test_a_checked_in_recipient_ticket_does_not_block_the_buyers_refund() -> None:
    """Only the refundable set is checked for use: ben's checked-in ticket is his business."""
    shard = inventory()
    order = buy(shard, "ana", "A-1-1", "A-1-2")
    bens = transfer(shard, "ana", order.tickets[0], "ben")
    assert isinstance(shard.apply(CheckIn(bens.ticket_id, "north"), 4.0).result, TicketView)
    refunded = shard.apply(RefundOrder("ana", order.order_id), 5.0).result
    assert isinstance(refunded, OrderView)
    assert sorted(t.status for t in refunded.tickets) == ["refunded", "transferred"]
    shard.apply(CheckIn(order.tickets[1].ticket_id, "north"), 6.0)  # void: refunded
    assert seat_map(shard) == "s....."


def test_the_buyers_order_never_shows_the_recipients_ticket() -> None:
    """Order views once followed a ticket through its transfers, so GET /v1/orders/{id} showed the
    buyer the recipient's new ticket — with its signed code, good for the gate in the
    recipient's place. The buyer sees their own ticket, `transferred`; the recipient's is theirs
    alone; a ticket given back shows anew."""
    shard = inventory()
    order = buy(shard, "ana", "A-1-1", "A-1-2")
    bens = transfer(shard, "ana", order.tickets[1], "ben")
    seen = shard.order(order.order_id, "ana")
    assert seen is not None
    assert [(t.ticket_id, t.status) for t in seen.tickets] == [
        (order.tickets[0].ticket_id, "valid"), (order.tickets[1].ticket_id, "transferred")]
    assert bens.ticket_id not in {t.ticket_id for t in seen.tickets}
    back = transfer(shard, "ben", bens, "ana")
    seen = shard.order(order.order_id, "ana")
    assert seen is not None and [t.ticket_id for t in seen.tickets] == [order.tickets[0].ticket_id, back.ticket_id]


# --- the event's cancellation (docs/organizers.md "Cancellation") -------------------------------------


def cancelled_inventory() -> tuple[ShardInventory, OrderView, OrderView, TicketView]:
    """A gift (one ticket transferred to ben) and a checked-in order, then the event cancelled."""
    shard = inventory()
    gift = buy(shard, "ana", "A-1-1", "A-1-2")
    bens = transfer(shard, "ana", gift.tickets[0], "ben")
    used = buy(shard, "cy", "A-1-3")
    assert isinstance(shard.apply(CheckIn(used.tickets[0].ticket_id, "north"), 4.0).result, TicketView)
    assert isinstance(shard.apply(ChangeEventStatus(EVENT, EventStatus.CANCELLED, "org"), 5.0).result,
                      EventStatusView)
    return shard, gift, used, bens


def test_the_cancellation_voids_every_ticket_an_order_became_and_pays_back_the_whole_order() -> None:
    shard, gift, used, bens = cancelled_inventory()
    outcome = shard.apply(RefundOrder("system", gift.order_id, True, "cancel-1", cancellation=True), 6.0)
    assert isinstance(outcome.result, OrderView) and outcome.result.status == "refunded"
    assert refunded_cents(outcome.result, cancellation=True) == 2 * PRICE_CENTS
    assert shard.ticket(bens.ticket_id) is not None and shard.ticket(bens.ticket_id).status == "cancelled"
    assert {t.status for t in outcome.result.tickets} == {TicketStatus.TRANSFERRED, TicketStatus.CANCELLED}
    checked_in = shard.apply(RefundOrder("system", used.order_id, True, "cancel-2", cancellation=True), 6.0)
    assert isinstance(checked_in.result, OrderView), checked_in.result  # the event will not happen
    assert [t.status for t in checked_in.result.tickets] == [TicketStatus.CANCELLED]
    assert seat_map(shard) == "......"
    check_all(shard.events[EVENT])


def test_a_cancelled_event_refuses_every_other_refund_check_in_transfer_and_status() -> None:
    shard, gift, _, bens = cancelled_inventory()
    assert code(shard.apply(RefundOrder("ana", gift.order_id), 6.0)) is ErrorCode.EVENT_CANCELLED
    assert code(shard.apply(CheckIn(gift.tickets[1].ticket_id, "north"), 6.0)) is ErrorCode.TICKET_VOID
    assert code(shard.apply(TransferTicket("ben", bens.ticket_id, "dee", new_id()), 6.0)) is ErrorCode.TICKET_VOID
    for status in (EventStatus.ON_SALE, EventStatus.PAUSED):
        assert code(shard.apply(ChangeEventStatus(EVENT, status, "org"), 6.0)) is ErrorCode.EVENT_CANCELLED


def test_only_a_cancelled_event_is_refunded_by_cancellation() -> None:
    shard = inventory()
    order = buy(shard, "ana", "A-1-1")
    refused = shard.apply(RefundOrder("system", order.order_id, True, "cancel", cancellation=True), 3.0)
    assert code(refused) is ErrorCode.VALIDATION_ERROR


def test_a_payment_in_flight_when_the_event_is_cancelled_fails_its_hold() -> None:
    shard = inventory()
    held = shard.apply(HoldSeats(EVENT, "ana", new_id(), ("A-1-1",)), 0.0).result
    assert isinstance(held, HoldView)
    assert isinstance(shard.apply(BeginCheckout("ana", held.hold_id), 1.0).result, HoldView)
    shard.apply(ChangeEventStatus(EVENT, EventStatus.CANCELLED, "org"), 2.0)
    refused = shard.apply(ConfirmCheckout("ana", held.hold_id, new_id(), (new_id(),)), 3.0)
    assert code(refused) is ErrorCode.EVENT_CANCELLED and refused.changes  # the hold failed with it
    assert shard.hold(held.hold_id) is not None and shard.hold(held.hold_id).status == "failed"


def test_a_pause_keeps_queue_mode() -> None:
    shard = inventory()
    event = shard.events[EVENT]
    event.settings = dataclasses.replace(event.settings, queue_required=True)
    shard.apply(ChangeEventStatus(EVENT, EventStatus.PAUSED, "org"), 1.0)
    assert event.settings.queue_required


def test_the_confirmation_of_the_last_unit_records_the_sell_out_and_a_hold_does_not() -> None:
    shard = inventory()
    first = buy(shard, "ana", "A-1-1", "A-1-2", "A-1-3")
    held = shard.apply(HoldSeats(EVENT, "ben", new_id(), ("A-1-4", "A-1-5", "A-1-6")), 3.0)
    assert isinstance(held.result, HoldView)
    assert not any(isinstance(change, EventSoldOut) for change in held.changes)  # a hold may come back
    assert isinstance(shard.apply(BeginCheckout("ben", held.result.hold_id), 4.0).result, HoldView)
    confirmed = shard.apply(ConfirmCheckout("ben", held.result.hold_id, new_id(), (new_id(), new_id(), new_id())),
                            5.0)
    assert [change for change in confirmed.changes if isinstance(change, EventSoldOut)] == [EventSoldOut(EVENT, 5.0)]
    assert isinstance(shard.apply(RefundOrder("ana", first.order_id), 6.0).result, OrderView)
    again = buy(shard, "cy", "A-1-1")
    assert again.order_id and seat_map(shard) == "s..sss"  # not sold out: no record (buy asserts the order)
