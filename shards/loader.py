"""Recovery reads: everything a shard actor needs to rebuild its memory, in a few large queries.

One query per table across *all* of the shard's events (not per event), rows grouped by event in
Python: recovery time is dominated by rows moved, not by round trips. Ended holds and old history
are not loaded; the actor answers questions about them from Postgres when asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg

from actors.inventory.recovery import HoldRow, OrderRow, TicketRow


@dataclass
class EventRows:
    event: dict[str, Any]
    sections: list[dict[str, Any]] = field(default_factory=list)
    pools: dict[str, tuple[int, int]] = field(default_factory=dict)  # section_id → (held, sold) as stored
    holds: list[HoldRow] = field(default_factory=list)
    orders: list[OrderRow] = field(default_factory=list)
    tickets: list[TicketRow] = field(default_factory=list)


async def load_events(connection: asyncpg.Connection, slots: list[int], event_ids: list[UUID] | None = None,
                      *, timeout_s: float | None = None) -> dict[UUID, EventRows]:
    """The rows of every event in `slots` (or only `event_ids`), grouped by event.

    `timeout_s` bounds each query; recovery passes its own (long) deadline, because loading a
    million-seat venue legitimately takes longer than an ordinary database call.
    """
    if event_ids is None:
        records = await connection.fetch("SELECT * FROM events WHERE slot = ANY($1::smallint[])", slots,
                                         timeout=timeout_s)
    else:
        records = await connection.fetch("SELECT * FROM events WHERE event_id = ANY($1::uuid[])", event_ids,
                                         timeout=timeout_s)
    events = {record["event_id"]: EventRows(dict(record)) for record in records}
    if not events:
        return events
    ids = list(events)
    for record in await connection.fetch(
            "SELECT * FROM sections WHERE event_id = ANY($1::uuid[]) ORDER BY event_id, position", ids,
            timeout=timeout_s):
        events[record["event_id"]].sections.append(dict(record))
    for record in await connection.fetch(
            "SELECT event_id, section_id, held, sold FROM ga_pools WHERE event_id = ANY($1::uuid[])", ids,
            timeout=timeout_s):
        events[record["event_id"]].pools[record["section_id"]] = (record["held"], record["sold"])
    for record in await connection.fetch(
            """SELECT event_id, hold_id, user_id, status, CASE WHEN kind = 'ga' THEN section_id END,
                      seat_nos, quantity, extract(epoch FROM expires_at)::float8
               FROM holds WHERE status IN ('held', 'payment_pending') AND event_id = ANY($1::uuid[])""", ids,
            timeout=timeout_s):
        events[record[0]].holds.append(HoldRow(record[1], record[2], record[3], record[4], tuple(record[5]),
                                               record[6], record[7]))
    for record in await connection.fetch(
            "SELECT event_id, order_id, user_id, status FROM orders WHERE event_id = ANY($1::uuid[])"
            " ORDER BY created_at, order_id", ids, timeout=timeout_s):
        events[record[0]].orders.append(OrderRow(record[1], record[2], record[3]))
    await _load_tickets(connection, ids, events, timeout_s)
    return events


async def _load_tickets(connection: asyncpg.Connection, ids: list[UUID], events: dict[UUID, EventRows],
                        timeout_s: float | None) -> None:
    # Issue order matters: a transfer's new ticket must come after the ticket it replaces.
    records = await connection.fetch(
        """SELECT t.event_id, t.ticket_id, t.order_id, t.user_id, t.seat_no, t.section_id, t.status,
                  extract(epoch FROM c.checked_in_at)::float8, c.gate, t.replaces
           FROM tickets t LEFT JOIN checkins c ON c.ticket_id = t.ticket_id
           WHERE t.event_id = ANY($1::uuid[]) ORDER BY t.issued_at, t.ticket_id""", ids, timeout=timeout_s)
    make = TicketRow._make
    for record in records:
        events[record[0]].tickets.append(make(tuple(record)[1:]))


async def load_idempotency(connection: asyncpg.Connection, retention_s: float, keys_max: int,
                           *, timeout_s: float | None = None) -> list[asyncpg.Record]:
    """The newest recorded keys within retention (at most `keys_max`), oldest first."""
    records = await connection.fetch(
        """SELECT user_id, key, fingerprint, result, extract(epoch FROM created_at)::float8 AS at_s
           FROM idempotency_keys WHERE created_at > now() - make_interval(secs => $1)
           ORDER BY created_at DESC LIMIT $2""", retention_s, keys_max + 1, timeout=timeout_s)
    return list(reversed(records))


async def lookup_idempotency(connection: asyncpg.Connection, keys: list[tuple[str, str]]) -> list[asyncpg.Record]:
    return list(await connection.fetch(
        """SELECT i.user_id, i.key, i.fingerprint, i.result, extract(epoch FROM i.created_at)::float8 AS at_s
           FROM idempotency_keys i JOIN unnest($1::text[], $2::text[]) AS k(user_id, key)
             ON i.user_id = k.user_id AND i.key = k.key""",
        [key[0] for key in keys], [key[1] for key in keys]))
