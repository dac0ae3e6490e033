"""Checkout's shell commands: money records committed together with the inventory change they pay for.

- `CompleteCheckout`: confirm a paid hold and record its charge (none for a free hold) in one commit.
- `RefundPaidOrder`: refund an order and record the money owed back as a *pending* refund in the same
  commit, so a crash between that commit and the gateway refund leaves a durable debt that the
  resolver pays (issue 10, defect 5), never seats back on sale with the charge kept.
- `RecordPayment`: what the gateway reported later (a refund confirmed, a charge's outcome).

A replayed command (its idempotency key seen before) records nothing: its records were committed
with the first.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from actors.inventory.results import OrderView, Outcome
from actors.inventory.tickets import TicketStatus
from actors.protocol import Ack, CompleteCheckout, PaymentRecord, RecordPayment, RefundPaidOrder, ShellOutcome
from shards.records import PaymentRecorded, TicketHoldersRecorded

if TYPE_CHECKING:
    from actors.inventory import ShardInventory


def refunded_cents(order: OrderView, *, cancellation: bool = False) -> int:
    """What a refund of `order` gives back: the prices of the tickets it refunded. An order is
    refunded once, so every refunded ticket in its view was refunded by that refund; tickets
    transferred away stayed valid and are not paid back (actors/inventory/ticket_decisions.py).
    The event's cancellation voids every ticket of the order, so the buyer gets the whole order back."""
    if cancellation:
        return order.total_cents
    return sum(ticket.price_cents for ticket in order.tickets if ticket.status == TicketStatus.REFUNDED)


def payment_change(payment: PaymentRecord, order_id: Any, now_s: float) -> PaymentRecorded:
    return PaymentRecorded(payment.payment_id, payment.event_id, payment.hold_id, order_id, payment.user_id,
                           payment.kind, payment.gateway, payment.gateway_ref, payment.idempotency_key,
                           payment.amount_cents, payment.currency, payment.status, now_s)


def checkout_outcome(inventory: ShardInventory, request: CompleteCheckout | RefundPaidOrder | RecordPayment,
                     now_s: float) -> Outcome | ShellOutcome:
    if isinstance(request, RecordPayment):
        return ShellOutcome(Ack(), (payment_change(request.payment, request.payment.order_id, now_s),))
    if isinstance(request, RefundPaidOrder):
        return _refund_outcome(inventory, request, now_s)
    outcome = inventory.apply(request.confirm, now_s)
    if outcome.replayed or not isinstance(outcome.result, OrderView):
        return outcome  # already recorded with the first confirmation, or refused (the caller refunds)
    order = outcome.result
    changes: list[Any] = list(outcome.changes)
    if request.payment is not None:
        changes.append(payment_change(request.payment, order.order_id, now_s))
    if request.holders:
        ticket_ids = tuple(ticket.ticket_id for ticket in order.tickets[: len(request.holders)])
        changes.append(TicketHoldersRecorded(ticket_ids, tuple(name for name, _ in request.holders),
                                             tuple(email for _, email in request.holders)))
    return ShellOutcome(order, tuple(changes), outcome.replayed)


def _refund_outcome(inventory: ShardInventory, request: RefundPaidOrder, now_s: float) -> Outcome | ShellOutcome:
    outcome = inventory.apply(request.refund, now_s)
    if outcome.replayed or not isinstance(outcome.result, OrderView) or request.payment is None:
        return outcome
    amount_cents = refunded_cents(outcome.result, cancellation=request.refund.cancellation)
    if amount_cents == 0:
        return outcome  # only free tickets went back: nothing is owed
    owed = dataclasses.replace(request.payment, amount_cents=amount_cents, status="pending")
    return ShellOutcome(outcome.result, (*outcome.changes, payment_change(owed, outcome.result.order_id, now_s)))
