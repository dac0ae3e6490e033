"""Recovery reads: everything a shard actor needs to rebuild its memory, in a few large queries.

One query per table across *all* of the shard's events (not per event): recovery time is
dominated by rows moved, not by round trips. Ended holds are not loaded: reads of them are
answered from Postgres by `shards.lookup` when memory does not know them.

Orders and original tickets are read column-wise (`actors.inventory.recovery.OrderColumns`,
`TicketColumns`): Postgres aggregates each column of an event into one value (ids into one
`bytea` of 16-byte UUIDs, seat numbers into one `bytea` of int4s, statuses into one byte each,
user ids into one `text[]`), so asyncpg decodes a handful of values per event instead of ten per
row, and the core fills its arrays from them in C. Measured at 1M seats (600k tickets, 150k
orders) on the 2-core box: the row queries took 2.0 s (1.65 s of it the ticket query, 0.3 s of
which in Postgres, the rest decoding 6M values into Python objects) plus ~1 s of Python building
a NamedTuple per row; the column queries take ~0.8 s, almost all of it in Postgres.

The queries run concurrently, each on its own pooled connection, so Postgres sorts and
aggregates the tickets while the other tables arrive. Separate connections mean separate
snapshots, which is safe only because recovery loads *after* `take_lease` committed: from then on
no transaction of the previous epoch can commit (`shards.writer.check_lease` holds the lease row
`FOR SHARE` and the increment waited for the last one), and this actor writes nothing before it
serves, so the shard's rows cannot change between the queries.
"""

from __future__ import annotations

import asyncio
import sys
from array import array
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg

from actors.inventory.recovery import HoldRow, OrderColumns, TicketColumns, TicketRow
from actors.inventory.tickets import ORDER_STATUSES, TICKET_STATUSES

# Statuses travel as their index in the core's status tuples (one byte each); a status the core
# does not know becomes 255, which the core refuses (an invariant), as it refused the text before.
_TICKET_STATUSES = [status.value for status in TICKET_STATUSES]
_ORDER_STATUSES = [status.value for status in ORDER_STATUSES]
_STATUS_BYTE = "set_byte('\\x00'::bytea, 0, coalesce(array_position($2::text[], {column}) - 1, 255))"
# Sorting the shard's tickets for the ticket query spilled to disk at the default work_mem (4 MB)
# from ~50k tickets on; 1M seats sort ~90 MB in memory. Set for recovery's own transaction only.
RECOVERY_WORK_MEM = "256MB"

EMPTY_ORDERS = OrderColumns(b"", [], b"")
EMPTY_TICKETS = TicketColumns(b"", b"", [], array("i"), array("i"), b"")


@dataclass
class EventRows:
    event: dict[str, Any]
    sections: list[dict[str, Any]] = field(default_factory=list)
    pools: dict[str, tuple[int, int]] = field(default_factory=dict)  # section_id → (held, sold) as stored
    holds: list[HoldRow] = field(default_factory=list)
    orders: OrderColumns = EMPTY_ORDERS
    tickets: TicketColumns = EMPTY_TICKETS
    replacements: list[TicketRow] = field(default_factory=list)  # transfers' new tickets, in issue order


# Every query selects the same events: by slot (recovery) or by id.
_BY_SLOT = "IN (SELECT event_id FROM events WHERE slot = ANY($1::smallint[]))"
_BY_ID = "= ANY($1::uuid[])"

_HOLDS = """
SELECT event_id, hold_id, user_id, status, CASE WHEN kind = 'ga' THEN section_id END, seat_nos, quantity,
       extract(epoch FROM expires_at)::float8, total_cents, item_prices_cents
FROM holds WHERE status IN ('held', 'payment_pending') AND event_id {events}"""

# Orders in `order_id` order, and each order's original tickets as one run in the same order
# (within an order: issue order). Order and ticket ids are UUIDv8 whose top 48 bits are their
# creation time in ms (`shards.slots.new_id`), so this is also (nearly) creation order.
_ORDERS = f"""
SELECT event_id,
       string_agg(uuid_send(order_id), ''::bytea ORDER BY order_id),
       array_agg(user_id ORDER BY order_id),
       string_agg({_STATUS_BYTE.format(column="status")}, ''::bytea ORDER BY order_id)
FROM orders WHERE event_id {{events}} GROUP BY event_id"""

_TICKET_ORDER = "t.order_id, t.issued_at, t.ticket_id"
# A check-in is stored as a `checkins` row; the writer leaves the ticket row's status at 'valid'.
# The core's projection of the same change (tests/replay.py) makes the ticket checked in,
# and so does recovery: a valid ticket with a check-in row is checked in (before this, recovery
# loaded it as valid, and a restarted actor would have admitted it a second time).
TICKET_STATUS_SQL = "CASE WHEN t.status = 'valid' AND c.ticket_id IS NOT NULL THEN 'checked_in' ELSE t.status END"
# A ticket's seat column as the core stores it: the seat_no, or `ga_seat_ref(section index)` =
# -1 - index for a GA unit (restore checks that a section's stored position is its index).
_TICKETS = f"""
SELECT t.event_id,
       string_agg(uuid_send(t.ticket_id), ''::bytea ORDER BY {_TICKET_ORDER}),
       string_agg(uuid_send(t.order_id), ''::bytea ORDER BY {_TICKET_ORDER}),
       array_agg(t.user_id ORDER BY {_TICKET_ORDER}),
       string_agg(int4send(coalesce(t.seat_no, -1 - s.position)), ''::bytea ORDER BY {_TICKET_ORDER}),
       string_agg(int4send(s.position), ''::bytea ORDER BY {_TICKET_ORDER}),
       string_agg({_STATUS_BYTE.format(column=TICKET_STATUS_SQL)}, ''::bytea ORDER BY {_TICKET_ORDER}),
       string_agg(int4send(coalesce(t.price_cents, s.price_cents)), ''::bytea ORDER BY {_TICKET_ORDER})
FROM tickets t JOIN sections s ON s.event_id = t.event_id AND s.section_id = t.section_id
     LEFT JOIN checkins c ON c.ticket_id = t.ticket_id
WHERE t.replaces IS NULL AND t.event_id {{events}}
GROUP BY t.event_id"""

# The rare tickets that need more than columns: transfers' new tickets (whole rows, in issue
# order, so each comes after the ticket it replaces) and check-ins of original tickets.
_TICKET_EXTRAS = f"""
SELECT t.event_id, t.ticket_id, t.order_id, t.user_id, t.seat_no, t.section_id, {TICKET_STATUS_SQL},
       extract(epoch FROM c.checked_in_at)::float8, c.gate, t.replaces, t.price_cents
FROM tickets t LEFT JOIN checkins c ON c.ticket_id = t.ticket_id
WHERE (t.replaces IS NOT NULL OR c.ticket_id IS NOT NULL OR t.status = 'checked_in') AND t.event_id {{events}}
ORDER BY t.issued_at, t.ticket_id"""


async def load_events(pool: asyncpg.Pool, slots: list[int], event_ids: list[UUID] | None = None,
                      *, timeout_s: float | None = None) -> dict[UUID, EventRows]:
    """The rows of every event in `slots` (or only `event_ids`), grouped by event.

    `timeout_s` bounds each query; recovery passes its own (long) deadline, because loading a
    million-seat venue legitimately takes longer than an ordinary database call.
    """
    events, argument = (_BY_SLOT, slots) if event_ids is None else (_BY_ID, event_ids)

    async def fetch(query: str, *extra: Any) -> list[asyncpg.Record]:
        async with pool.acquire(timeout=timeout_s) as connection, connection.transaction(readonly=True):
            await connection.execute(f"SET LOCAL work_mem = '{RECOVERY_WORK_MEM}'")
            return list(await connection.fetch(query.format(events=events), argument, *extra, timeout=timeout_s))

    # The ticket query is by far the longest (Postgres sorts every ticket): start it first.
    tickets, orders, extras, holds, loaded = await asyncio.gather(
        fetch(_TICKETS, _TICKET_STATUSES), fetch(_ORDERS, _ORDER_STATUSES), fetch(_TICKET_EXTRAS), fetch(_HOLDS),
        _load_event_rows(pool, events, argument, timeout_s))
    for record in orders:
        loaded[record[0]].orders = OrderColumns(record[1], record[2], record[3])
    for record in tickets:
        loaded[record[0]].tickets = TicketColumns(record[1], record[2], record[3], _int4s(record[4]),
                                                  _int4s(record[5]), record[6], prices=_int4s(record[7]))
    _add_extras(loaded, extras)
    for record in holds:
        loaded[record[0]].holds.append(HoldRow(record[1], record[2], record[3], record[4], tuple(record[5]),
                                               record[6], record[7], record[8],
                                               None if record[9] is None else tuple(record[9])))
    return loaded


async def _load_event_rows(pool: asyncpg.Pool, events: str, argument: list[Any], timeout_s: float | None
                           ) -> dict[UUID, EventRows]:
    async with pool.acquire(timeout=timeout_s) as connection:
        loaded = {record["event_id"]: EventRows(dict(record)) for record in await connection.fetch(
            f"SELECT * FROM events WHERE event_id {events}", argument, timeout=timeout_s)}
        for record in await connection.fetch(
                f"SELECT * FROM sections WHERE event_id {events} ORDER BY event_id, position", argument,
                timeout=timeout_s):
            loaded[record["event_id"]].sections.append(dict(record))
        for record in await connection.fetch(
                f"SELECT event_id, section_id, held, sold FROM ga_pools WHERE event_id {events}", argument,
                timeout=timeout_s):
            loaded[record["event_id"]].pools[record["section_id"]] = (record["held"], record["sold"])
    return loaded


def _add_extras(loaded: dict[UUID, EventRows], records: list[asyncpg.Record]) -> None:
    checkins: dict[UUID, list[tuple[bytes, float, str]]] = {}
    for record in records:
        row = TicketRow._make(tuple(record)[1:])
        if row.replaces is not None:
            loaded[record[0]].replacements.append(row)
        elif row.status == "checked_in":  # (like the core, a missing check-in row reads as gate "" at 0)
            checkins.setdefault(record[0], []).append((row.ticket_id.bytes, row.checked_in_at_s or 0.0, row.gate or ""))
    for event_id, entries in checkins.items():
        loaded[event_id].tickets = loaded[event_id].tickets._replace(checkins=entries)


def _int4s(data: bytes) -> array[int]:
    """A `string_agg` of `int4send` values (big-endian int4s) as an array, converted in C."""
    values = array("i")
    values.frombytes(data)
    if sys.byteorder == "little":
        values.byteswap()
    return values


async def load_idempotency(connection: asyncpg.Connection, keys_max: int, *, timeout_s: float | None = None
                           ) -> list[asyncpg.Record]:
    """The newest recorded keys, at most `keys_max + 1` of them, oldest first.

    Of any age: a key lives until the purge job deletes it (`shards.lookup`), and memory must not
    forget a key that Postgres still holds. One more than fits tells recovery that memory cannot
    hold them all (the cache is then incomplete and misses are looked up).
    """
    records = await connection.fetch(
        """SELECT user_id, key, fingerprint, result, extract(epoch FROM created_at)::float8 AS at_s
           FROM idempotency_keys ORDER BY created_at DESC LIMIT $1""", keys_max + 1, timeout=timeout_s)
    return list(reversed(records))
