"""What the router reads from a shard's database directly, without its shard actor (SQL stays in
shards/): one page of the event listing, the revocation list offline scanners poll, and the
readiness probe. The checkout service's reads of payment history are in `shards/checkout_queries.py`.

Writes never happen here: every change goes through the shard actor and its group commit. Each
read is bounded in rows (a `LIMIT` the caller passes) and in time; errors are the driver's own
(`shards.pools.QUERY_ERRORS`, `CONNECTION_ERRORS` classify them), so the caller decides whether a
failure is one shard missing from a scatter-gather (503) or a lost connection (503 too).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from shards.pools import PoolOf

# One query per shard: the events after the cursor in (starts_at, event_id) keyset order — the
# `events_starts_at` index serves it directly, `events_search` (GIN) a text search and
# `events_organizer` an organizer's list — each with its sections as one jsonb array (a
# correlated subquery on the sections primary key), so a page is one round trip. The router's
# pools have no jsonb codec, so jsonb columns arrive as text. The text query ($6) is a tsquery
# the router built from quoted words (router/browse.py `text_query`); it is a parameter, never
# part of the SQL. Events of a slot a move is taking away ('fenced' here, shards/slot_moves.py)
# are left out: from the moment the target holds their copy they are listed from there, once.
EVENTS_PAGE_SQL = """
SELECT e.event_id, e.organizer_id, e.title, e.category, e.description, e.venue, e.starts_at, e.ends_at,
       e.currency, e.hold_seconds, e.per_person_limit, e.queue, e.sale_windows, e.status, e.created_at,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'section_id', s.section_id, 'name', s.name, 'kind', s.kind, 'capacity', s.capacity,
                   'price_cents', s.price_cents, 'first_seat_no', s.first_seat_no, 'rows', s.rows,
                   'blocked_seat_nos', s.blocked_seat_nos) ORDER BY s.position), '[]'::jsonb)
          FROM sections s WHERE s.event_id = e.event_id) AS sections
  FROM events e
 WHERE (e.starts_at, e.event_id) > ($1, $2)
   AND ($3::timestamptz IS NULL OR e.starts_at < $3)
   AND ($4::text IS NULL OR e.category = $4)
   AND ($5::text IS NULL OR e.city = $5)
   AND ($6::text IS NULL OR e.search @@ to_tsquery('simple', $6))
   AND ($7::text IS NULL OR e.status = $7)
   AND ($8::text IS NULL OR e.organizer_id = $8)
   AND NOT EXISTS (SELECT 1 FROM slot_owners o WHERE o.slot = e.slot AND o.state <> 'owned')
 ORDER BY e.starts_at, e.event_id
 LIMIT $9
"""

# Tickets voided after the cursor, in (updated_at, ticket_id) order.
REVOCATIONS_SQL = """SELECT ticket_id, status, updated_at FROM tickets
           WHERE event_id = $1 AND status IN ('refunded', 'transferred', 'cancelled')
             AND ($2::timestamptz IS NULL OR (updated_at, ticket_id) > ($2, $3))
           ORDER BY updated_at, ticket_id LIMIT $4"""

PROBE_SQL = "SELECT 1"


@dataclass(frozen=True, slots=True)
class EventListQuery:
    """The filters and page size of `GET /v1/events`. `text_query` is `to_tsquery` input made of
    quoted words only (router/browse.py `text_query`); `organizer_id` is already authorized."""

    after: tuple[datetime, UUID]
    starts_before: datetime | None
    category: str | None
    city: str | None
    text_query: str | None
    status: str | None
    organizer_id: str | None
    limit: int


class Revocation(NamedTuple):
    ticket_id: UUID
    status: str
    updated_at: datetime


class ReadQueries:
    """The router's direct reads, one shard database at a time (`pool_of` is `ShardPools.pool`)."""

    def __init__(self, pool_of: PoolOf) -> None:
        self._pool_of = pool_of

    async def events_page(self, shard_id: int, query: EventListQuery, timeout_s: float) -> list[dict[str, Any]]:
        """Up to `query.limit + 1` events of one shard after `query.after`, in keyset order (one more
        than a page, so the merge knows whether there is a next page), as column dicts (`sections`
        and the jsonb columns as JSON text)."""
        async with asyncio.timeout(timeout_s):  # covers pool creation, acquiring a connection and the query
            pool = await self._pool_of(shard_id)
            rows = await pool.fetch(EVENTS_PAGE_SQL, *query.after, query.starts_before, query.category, query.city,
                                    query.text_query, query.status, query.organizer_id, query.limit + 1,
                                    timeout=timeout_s)
        return [dict(row) for row in rows]

    async def revocations(self, shard_id: int, event_id: UUID, after: tuple[datetime, UUID] | None,
                          limit: int) -> list[Revocation]:
        """Up to `limit` revoked tickets of an event after the cursor (within the pool's command
        timeout, `db_call_timeout_s`)."""
        pool = await self._pool_of(shard_id)
        rows = await pool.fetch(REVOCATIONS_SQL, event_id, after[0] if after else None, after[1] if after else None,
                                limit)
        return [Revocation(row["ticket_id"], row["status"], row["updated_at"]) for row in rows]

    async def probe(self, shard_id: int, timeout_s: float) -> Any:
        """`SELECT 1` on the shard's database: it accepts connections and answers queries."""
        pool = await self._pool_of(shard_id)
        return await pool.fetchval(PROBE_SQL, timeout=timeout_s)
