"""Who may refund what after tickets moved (issue 10, defect 6; docs/tickets-and-payments.md).

The rule: a refund covers the order's tickets still held by its buyer. A ticket transferred away
belongs to its recipient — the sender can neither void it by refunding the order nor get its
money back — and a ticket transferred back to the buyer is refundable again. Each test opens with
the scenario it proves; the first is the exploit of the defect, which refunded the recipient's
ticket to the sender.
"""

from __future__ import annotations

import uuid
from itertools import count

import pytest

from actors.inventory.commands import (
    BeginCheckout,
    CheckIn,
    ConfirmCheckout,
    HoldSeats,
    RefundOrder,
    TransferTicket,
)
from actors.inventory.core import ShardInventory
from actors.inventory.errors import ErrorCode
from actors.inventory.layout import Layout, RowSpec, SeatedSectionSpec
from actors.inventory.results import HoldView, OrderView, Outcome, Rejection, TicketView, TransferView
from actors.inventory.sales import EventSettings
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
