"""Answers to the router's queries (DESIGN §5 "Reads"): from the actor's memory, and from
Postgres for the holds, orders and tickets memory does not know.

Memory keeps live holds and only the last `closed_holds_max` ended ones (plus every order and
ticket of its events, so those fall back only when memory cannot have them). An acknowledged hold
must read back with its true status after any restart or eviction (issue 10, defect 2): the
checkout saga decides between confirming and refunding a charge on it. So "not found" from memory
is checked in Postgres (`shards.lookup`) before it is believed; if Postgres cannot answer within
`durable_lookup_timeout_s` the read is `Unavailable` (503 with Retry-After), never a false 404.
The price is one indexed query per read of an id memory does not know, unknown ids included.

`GetUserTickets` needs no fallback: recovery loads every ticket of the shard's events and tickets
are never evicted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from actors.event_bodies import with_current_prices
from actors.protocol import (
    AvailabilityView,
    EventDocument,
    GetAvailability,
    GetEvent,
    GetHold,
    GetOrder,
    GetSeatMap,
    GetTicket,
    GetUserTickets,
    SeatMapView,
    Unavailable,
)

if TYPE_CHECKING:
    from actors.catalog import ShardState
    from actors.shard_metrics import ShardMetrics
    from shards.lookup import DurableLookup


async def answer_query(state: ShardState, lookup: DurableLookup | None, metrics: ShardMetrics, query: Any) -> Any:
    """The answer to one query; `lookup` None (a negative control's store) trusts memory alone."""
    if state.is_quarantined(getattr(query, "event_id", None)):
        return Unavailable("this event's stored rows are inconsistent: it is not served")
    inventory, catalog = state.inventory, state.catalog
    kind = type(query)
    if kind is GetAvailability:
        sections = inventory.availability(query.event_id)
        document = catalog.get(query.event_id)
        return None if sections is None or document is None else AvailabilityView(
            query.event_id, document["currency"], sections)
    if kind is GetSeatMap:
        return _seat_map(state, query)
    if kind is GetEvent:
        document = catalog.get(query.event_id)
        event = inventory.events.get(query.event_id)
        if document is None:
            return None
        current = document if event is None else with_current_prices(document, event.availability())
        return EventDocument(with_cancellation(state, query.event_id, current))
    if kind is GetHold:
        hold = inventory.hold(query.hold_id, query.user_id)
        return hold if hold is not None else await _durable(lookup, metrics, "hold", query.hold_id, query.user_id)
    if kind is GetOrder:
        order = inventory.order(query.order_id, query.user_id)
        return order if order is not None else await _durable(lookup, metrics, "order", query.order_id,
                                                              query.user_id)
    if kind is GetTicket:
        ticket = inventory.ticket(query.ticket_id, query.user_id)
        return ticket if ticket is not None else await _durable(lookup, metrics, "ticket", query.ticket_id,
                                                                query.user_id)
    if kind is GetUserTickets:
        event_ids = [query.event_id] if query.event_id is not None else list(catalog)
        return tuple(ticket for event_id in event_ids for ticket in inventory.user_tickets(event_id, query.user_id))
    raise TypeError(f"unknown query {kind.__name__}")


async def _durable(lookup: DurableLookup | None, metrics: ShardMetrics, kind: str, entity_id: UUID,
                   user_id: str | None) -> Any:
    """Memory does not know `entity_id`: ask Postgres."""
    from shards.lookup import LookupFailed

    if lookup is None:
        return None
    try:
        view = await getattr(lookup, kind)(entity_id, user_id)
    except LookupFailed as error:
        metrics.durable_reads.labels(metrics.shard, kind, "failed").inc()
        return Unavailable(f"the {kind} is not in memory and Postgres did not answer: {error}")
    metrics.durable_reads.labels(metrics.shard, kind, "missing" if view is None else "found").inc()
    return view


def _seat_map(state: ShardState, query: GetSeatMap) -> SeatMapView | None:
    wanted = state.catalog.seated_sections(query.event_id, query.section_id)
    if wanted is None:
        return None
    sections = []
    for section_id in wanted:
        rows = state.inventory.seat_map(query.event_id, section_id) or ()
        sections.append((section_id, tuple((row.label, row.seats) for row in rows)))
    return SeatMapView(tuple(sections))


def with_cancellation(state: ShardState, event_id: UUID, document: Any) -> Any:
    """A cancelled event's document with its cancellation's progress (API.md "Organizers"):
    counted from the orders in memory when asked, never stored with the document."""
    event = state.inventory.events.get(event_id) if document.get("status") == "cancelled" else None
    if event is None:
        return document
    orders_total, orders_refunded = event.tickets.order_counts()
    return {**document, "cancellation": {"orders_total": orders_total, "orders_refunded": orders_refunded}}
