"""Answers to the router's queries, from the actor's memory (DESIGN §5 "Reads")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
)

if TYPE_CHECKING:
    from actors.shard import EventShard


async def answer_query(shard: EventShard, query: Any) -> Any:
    inventory = shard.inventory
    kind = type(query)
    if kind is GetAvailability:
        sections = inventory.availability(query.event_id)
        document = shard.documents.get(query.event_id)
        return None if sections is None or document is None else AvailabilityView(
            query.event_id, document["currency"], sections)
    if kind is GetSeatMap:
        return _seat_map(shard, query)
    if kind is GetEvent:
        document = shard.documents.get(query.event_id)
        return None if document is None else EventDocument(document)
    if kind is GetHold:
        return inventory.hold(query.hold_id, query.user_id)
    if kind is GetOrder:
        return inventory.order(query.order_id, query.user_id)
    if kind is GetTicket:
        return inventory.ticket(query.ticket_id, query.user_id)
    if kind is GetUserTickets:
        event_ids = [query.event_id] if query.event_id is not None else list(shard.documents)
        return tuple(ticket for event_id in event_ids for ticket in inventory.user_tickets(event_id, query.user_id))
    raise TypeError(f"unknown query {kind.__name__}")


def _seat_map(shard: EventShard, query: GetSeatMap) -> SeatMapView | None:
    document = shard.documents.get(query.event_id)
    if document is None:
        return None
    wanted = [section["id"] for section in document["sections"] if section["kind"] == "seated"
              and (query.section_id is None or section["id"] == query.section_id)]
    sections = []
    for section_id in wanted:
        rows = shard.inventory.seat_map(query.event_id, section_id) or ()
        sections.append((section_id, tuple((row.label, row.seats) for row in rows)))
    return SeatMapView(tuple(sections))
