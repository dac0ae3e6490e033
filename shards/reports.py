"""What organizers read about their events from the shard's database (API.md "Organizers"): the
sales report and the rows of the orders and attendees exports. SQL stays in shards/; the router
(router/reports_api.py) authorizes and formats.

Reads only, like `shards/queries.py`, each in one `REPEATABLE READ READ ONLY` transaction: every
figure of a report, and every row of an export, comes from one snapshot of the database, so the
numbers add up with each other even while the event sells. An export reads its rows through a
server-side cursor, `batch_rows` per round trip, so a worker never holds a whole event's orders in
memory; its connection is taken from the worker's pool for as long as the export streams.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import orjson

from shards.loader import TICKET_STATUS_SQL
from shards.pools import PoolOf

OWNER_SQL = "SELECT organizer_id FROM events WHERE event_id = $1"
EVENT_SQL = "SELECT organizer_id, currency, transaction_timestamp() AS as_of FROM events WHERE event_id = $1"
SECTIONS_SQL = """SELECT section_id, kind, capacity, price_cents, first_seat_no, rows,
                         cardinality(blocked_seat_nos) AS blocked
                    FROM sections WHERE event_id = $1 ORDER BY position"""
# Held and sold now, as the inventory counts them: GA pools' counters, and seat claims by section.
POOLS_SQL = "SELECT section_id, held, sold FROM ga_pools WHERE event_id = $1"
SEAT_CLAIMS_SQL = """
SELECT s.section_id, count(*) FILTER (WHERE c.state = 'held') AS held, count(*) FILTER (WHERE c.state = 'sold') AS sold
  FROM seat_claims c
  JOIN sections s ON s.event_id = c.event_id AND s.kind = 'seated'
                 AND c.seat_no >= s.first_seat_no AND c.seat_no < s.first_seat_no + s.capacity
 WHERE c.event_id = $1
 GROUP BY s.section_id"""
# Two queries rather than one, so that each is served by its partial index (tickets_event_live,
# tickets_void) instead of a scan of the shard's tickets. A ticket admitted at a gate keeps the
# status `valid` in its row and has a `checkins` row (shards/loader.py TICKET_STATUS_SQL).
# Revenue is the sum of the prices the tickets were sold at (a dynamic section's price moves, so
# sold × today's price would be wrong); migration 008 gave every older ticket its section's price.
LIVE_TICKETS_SQL = f"""SELECT t.section_id, count(*) FILTER (WHERE {TICKET_STATUS_SQL} = 'checked_in') AS checked_in,
                              coalesce(sum(t.price_cents), 0)::bigint AS revenue_cents
                         FROM tickets t LEFT JOIN checkins c ON c.ticket_id = t.ticket_id
                        WHERE t.event_id = $1 AND t.status IN ('valid', 'checked_in')
                        GROUP BY t.section_id"""
REFUNDED_TICKETS_SQL = """SELECT section_id, count(*) AS refunded,
                                 coalesce(sum(price_cents), 0)::bigint AS refunded_cents
                            FROM tickets WHERE event_id = $1 AND status = 'refunded' GROUP BY section_id"""
# sum(bigint) is numeric (a Decimal in Python); an event's orders add up far below 2^63 cents.
ORDERS_SQL = """
SELECT count(*) FILTER (WHERE status = 'confirmed') AS confirmed,
       coalesce(sum(total_cents) FILTER (WHERE status = 'confirmed'), 0)::bigint AS confirmed_cents,
       count(*) FILTER (WHERE status = 'refunded') AS refunded,
       coalesce(sum(total_cents) FILTER (WHERE status = 'refunded'), 0)::bigint AS refunded_cents
  FROM orders WHERE event_id = $1"""
HOLDS_SQL = """
SELECT count(*) FILTER (WHERE status = 'confirmed') AS confirmed,
       count(*) FILTER (WHERE status IN ('confirmed', 'expired', 'released', 'failed')) AS decided
  FROM holds WHERE event_id = $1"""

# The exports, in a stable order. Orders: oldest first. Attendees (live tickets: the people who
# may enter): by section, then seat, as a door list reads.
ORDERS_EXPORT_SQL = """
SELECT o.order_id, o.created_at, o.status, o.user_id, h.quantity AS tickets, o.total_cents, o.currency,
       CASE WHEN o.status = 'refunded' THEN o.updated_at END AS refunded_at,
       (SELECT p.gateway_ref FROM payments p
         WHERE p.hold_id = o.hold_id AND p.kind = 'charge' AND p.status = 'succeeded'
         ORDER BY p.created_at LIMIT 1) AS payment_ref
  FROM orders o JOIN holds h ON h.hold_id = o.hold_id
 WHERE o.event_id = $1
 ORDER BY o.created_at, o.order_id"""
ATTENDEES_EXPORT_SQL = f"""
SELECT t.ticket_id, t.order_id, {TICKET_STATUS_SQL} AS status, t.section_id, t.seat_no, t.holder_name, t.holder_email,
       t.user_id, t.issued_at, c.checked_in_at, c.gate
  FROM tickets t
  JOIN sections s ON s.event_id = t.event_id AND s.section_id = t.section_id
  LEFT JOIN checkins c ON c.ticket_id = t.ticket_id
 WHERE t.event_id = $1 AND t.status IN ('valid', 'checked_in')
 ORDER BY s.position, t.seat_no, t.issued_at, t.ticket_id"""
EXPORTS = {"orders": ORDERS_EXPORT_SQL, "attendees": ATTENDEES_EXPORT_SQL}
ExportKind = Literal["orders", "attendees"]


@dataclass(frozen=True, slots=True)
class SectionSales:
    section_id: str
    kind: str
    capacity: int
    held: int
    sold: int
    blocked: int
    price_cents: int  # now (a dynamic section's moves)
    checked_in: int
    refunded: int  # tickets refunded
    revenue_cents: int  # the live tickets' prices, as sold
    refunded_cents: int  # the refunded tickets' prices, as sold


@dataclass(frozen=True, slots=True)
class Sales:
    organizer_id: str
    currency: str
    as_of: datetime  # the snapshot's time (the transaction's start)
    orders: int  # confirmed (not refunded)
    confirmed_cents: int
    orders_refunded: int
    refunded_cents: int
    holds_confirmed: int
    holds_decided: int  # confirmed, expired, released or failed: no longer open
    sections: tuple[SectionSales, ...]


class SeatLabels:
    """Seat numbers → labels (`A-2-17`) of one event, from its sections' rows, without a map of
    every seat (a million-seat venue): a binary search over the rows' first seat numbers."""

    def __init__(self, sections: list[Any]) -> None:
        self._starts: list[int] = []
        self._rows: list[tuple[str, str, int]] = []  # (section id, row label, first seat no of the row)
        for section in sections:
            if section["kind"] != "seated":
                continue
            seat_no = section["first_seat_no"]
            rows = section["rows"]
            for row in orjson.loads(rows) if isinstance(rows, str) else rows:
                self._starts.append(seat_no)
                self._rows.append((section["section_id"], row["label"], seat_no))
                seat_no += row["seats"]

    def label(self, seat_no: int | None) -> str:
        if seat_no is None or not self._starts:
            return ""
        section_id, row_label, first = self._rows[bisect.bisect_right(self._starts, seat_no) - 1]
        return f"{section_id}-{row_label}-{seat_no - first + 1}"


class ReportQueries:
    """Organizers' reads, one shard database at a time (`pool_of` is `ShardPools.pool`); every
    query runs within the pool's command timeout (`db_call_timeout_s`)."""

    def __init__(self, pool_of: PoolOf) -> None:
        self._pool_of = pool_of

    async def organizer_of(self, shard_id: int, event_id: UUID) -> str | None:
        """The event's organizer id; None when the event is not in this shard's database."""
        pool = await self._pool_of(shard_id)
        organizer: str | None = await pool.fetchval(OWNER_SQL, event_id)
        return organizer

    async def sales(self, shard_id: int, event_id: UUID) -> Sales | None:
        """The event's sales as of one snapshot; None when the event is not there."""
        pool = await self._pool_of(shard_id)
        async with pool.acquire() as connection, connection.transaction(isolation="repeatable_read",
                                                                         readonly=True):
            event = await connection.fetchrow(EVENT_SQL, event_id)
            if event is None:
                return None
            sections = await connection.fetch(SECTIONS_SQL, event_id)
            counts = {row["section_id"]: (row["held"], row["sold"])
                      for sql in (POOLS_SQL, SEAT_CLAIMS_SQL) for row in await connection.fetch(sql, event_id)}
            live = {row["section_id"]: (row["checked_in"], row["revenue_cents"])
                    for row in await connection.fetch(LIVE_TICKETS_SQL, event_id)}
            refunded = {row["section_id"]: (row["refunded"], row["refunded_cents"])
                        for row in await connection.fetch(REFUNDED_TICKETS_SQL, event_id)}
            orders = await connection.fetchrow(ORDERS_SQL, event_id)
            holds = await connection.fetchrow(HOLDS_SQL, event_id)
        section_sales = tuple(
            SectionSales(row["section_id"], row["kind"], row["capacity"], *counts.get(row["section_id"], (0, 0)),
                         row["blocked"], row["price_cents"], live.get(row["section_id"], (0, 0))[0],
                         refunded.get(row["section_id"], (0, 0))[0], live.get(row["section_id"], (0, 0))[1],
                         refunded.get(row["section_id"], (0, 0))[1])
            for row in sections)
        return Sales(event["organizer_id"], event["currency"].strip(), event["as_of"], orders["confirmed"],
                     orders["confirmed_cents"], orders["refunded"], orders["refunded_cents"], holds["confirmed"],
                     holds["decided"], section_sales)

    async def export_rows(self, shard_id: int, event_id: UUID, kind: ExportKind, batch_rows: int,
                          timeout_s: float) -> AsyncGenerator[tuple[SeatLabels, list[Any]], None]:
        """The export's rows in batches of at most `batch_rows`, each with the event's seat labels,
        read through a server-side cursor in one snapshot. Each round trip is bounded by
        `timeout_s`; the connection returns to the pool when the iteration ends or is closed."""
        pool = await self._pool_of(shard_id)
        async with pool.acquire() as connection, connection.transaction(isolation="repeatable_read",
                                                                         readonly=True):
            labels = SeatLabels(await connection.fetch(SECTIONS_SQL, event_id, timeout=timeout_s))
            cursor = await connection.cursor(EXPORTS[kind], event_id, timeout=timeout_s)
            while True:
                rows = await cursor.fetch(batch_rows, timeout=timeout_s)
                if not rows:
                    return
                yield labels, rows
