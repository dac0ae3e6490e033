"""Checkout's shell commands: confirm a paid hold and record the charge in one commit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.inventory.results import OrderView, Outcome
from actors.protocol import Ack, CompleteCheckout, PaymentRecord, RecordPayment, ShellOutcome
from shards.writer import PaymentRecorded, TicketHoldersRecorded

if TYPE_CHECKING:
    from actors.shard import EventShard


def payment_change(payment: PaymentRecord, order_id: Any, now_s: float) -> PaymentRecorded:
    return PaymentRecorded(payment.payment_id, payment.event_id, payment.hold_id, order_id, payment.user_id,
                           payment.kind, payment.gateway, payment.gateway_ref, payment.idempotency_key,
                           payment.amount_cents, payment.currency, payment.status, now_s)


def checkout_outcome(shard: EventShard, request: CompleteCheckout | RecordPayment, now_s: float
                     ) -> Outcome | ShellOutcome:
    if isinstance(request, RecordPayment):
        return ShellOutcome(Ack(), (payment_change(request.payment, request.payment.order_id, now_s),))
    outcome = shard.inventory.apply(request.confirm, now_s)
    if outcome.replayed or not isinstance(outcome.result, OrderView):
        return outcome  # already recorded with the first confirmation, or refused (the caller refunds)
    order = outcome.result
    changes: list[Any] = [*outcome.changes, payment_change(request.payment, order.order_id, now_s)]
    if request.holders:
        ticket_ids = tuple(ticket.ticket_id for ticket in order.tickets[: len(request.holders)])
        changes.append(TicketHoldersRecorded(ticket_ids, tuple(name for name, _ in request.holders),
                                             tuple(email for _, email in request.holders)))
    return ShellOutcome(order, tuple(changes), outcome.replayed)
