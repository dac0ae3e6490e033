"""Outbox rows: the webhook events a batch of change records causes, written in its transaction.

The writer (`shards.writer.plan_batch`) hands the records that can cause an event to `fold` as it
plans, and `execute_plan` COPYs the rows into ``outbox`` inside the batch's own transaction, so a
rolled-back batch loses its events with its changes and a committed one cannot lose them. Rows of
one shard are numbered by ``outbox_id`` in commit order (one writer per shard, batches in order),
which is the order a relay delivers them in, per event.

Topics (``shared/API.md`` "Webhooks"): ``order.confirmed`` (an order created: it is confirmed from
the start), ``order.refunded``, ``ticket.checked_in``, ``ticket.transferred`` (with the
recipient's new ticket, issued in the same command), ``ticket.cancelled`` (a ticket status change
to ``cancelled``: an event cancellation's refund of its order, router/cancellation.py) and
``event.cancelled``, and ``event.sold_out`` (the actor's ``EventSoldOut`` record, added to the
confirmation that sold the last unit; again after a refund and a new sell-out).

Payloads carry ids as strings and times as ISO 8601 UTC, the fields a consumer needs to act
without calling back: who, how much, which tickets.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from actors.inventory.changes import (
    CheckedIn,
    EventSoldOut,
    EventStatusChanged,
    OrderCreated,
    OrderStatusChanged,
    TicketsIssued,
    TicketStatusChanged,
)

TOPICS = ("order.confirmed", "order.refunded", "ticket.transferred", "ticket.checked_in", "ticket.cancelled",
          "event.sold_out", "event.cancelled")
OUTBOX_COLUMNS = ("event_id", "topic", "payload", "created_at")

# One outbox row as planned: [event_id, topic, payload, at_s]. The payload is a dict the batch may
# still complete (an order's tickets are issued by the record after its OrderCreated).
OutboxRow = list[Any]


def _iso(at_s: float) -> str:
    return datetime.fromtimestamp(at_s, UTC).isoformat().replace("+00:00", "Z")


def fold(rows: list[OutboxRow], orders: dict[int, dict[str, Any]], change: Any) -> None:
    """Append the outbox row `change` causes, if any. `orders` maps an order created in this batch
    to its payload, so the tickets issued for it join it."""
    kind = type(change)
    if kind is OrderCreated:
        payload = {"order_id": str(change.order_id), "event_id": str(change.event_id), "user_id": change.user_id,
                   "hold_id": str(change.hold_id), "total_cents": change.total_cents, "currency": change.currency,
                   "status": "confirmed", "ticket_ids": [], "confirmed_at": _iso(change.at_s)}
        orders[change.order_id.int] = payload
        rows.append([change.event_id, "order.confirmed", payload, change.at_s])
    elif kind is TicketsIssued:
        if change.replaces is not None:
            _fold_transfer(rows, change)
            return
        order = orders.get(change.order_id.int)
        if order is not None:
            order["ticket_ids"].extend(str(ticket_id) for ticket_id in change.ticket_ids)
    elif kind is OrderStatusChanged:
        if change.to_status == "refunded":
            rows.append([change.event_id, "order.refunded",
                         {"order_id": str(change.order_id), "event_id": str(change.event_id), "status": "refunded",
                          "actor": change.actor, "refunded_at": _iso(change.at_s)}, change.at_s])
    elif kind is TicketStatusChanged:
        if change.to_status == "cancelled":
            rows.append([change.event_id, "ticket.cancelled",
                         {"ticket_id": str(change.ticket_id), "event_id": str(change.event_id),
                          "status": "cancelled", "cancelled_at": _iso(change.at_s)}, change.at_s])
    elif kind is CheckedIn:
        rows.append([change.event_id, "ticket.checked_in",
                     {"ticket_id": str(change.ticket_id), "event_id": str(change.event_id), "gate": change.gate,
                      "checked_in_at": _iso(change.at_s)}, change.at_s])
    elif kind is EventSoldOut:
        rows.append([change.event_id, "event.sold_out",
                     {"event_id": str(change.event_id), "sold_out_at": _iso(change.at_s)}, change.at_s])
    elif kind is EventStatusChanged and change.to_status == "cancelled":
        rows.append([change.event_id, "event.cancelled",
                     {"event_id": str(change.event_id), "status": "cancelled", "from_status": change.from_status,
                      "cancelled_at": _iso(change.at_s)}, change.at_s])


def _fold_transfer(rows: list[OutboxRow], change: TicketsIssued) -> None:
    new_ticket_id: UUID = change.ticket_ids[0]
    rows.append([change.event_id, "ticket.transferred",
                 {"ticket_id": str(change.replaces), "new_ticket_id": str(new_ticket_id),
                  "event_id": str(change.event_id), "order_id": str(change.order_id), "to_user_id": change.user_id,
                  "transferred_at": _iso(change.at_s)}, change.at_s])


async def write(connection: asyncpg.Connection, rows: list[OutboxRow]) -> None:
    """COPY the rows in order (``outbox_id`` follows it) inside the caller's transaction."""
    await connection.copy_records_to_table("outbox", records=rows, columns=OUTBOX_COLUMNS)
