"""The durable lookup: what a shard actor's memory no longer keeps, read back from Postgres.

Memory keeps live holds, the last ``closed_holds_max`` ended ones, every order and ticket of its
events, and a bounded cache of idempotency keys. Everything acknowledged is in Postgres, so when
memory answers "not found" the actor asks here before saying so (`actors/reads.py`,
`actors/restore.load_keys`):

- :meth:`DurableLookup.hold`, :meth:`order`, :meth:`ticket` return the same view types the core
  returns (`actors.inventory.results`), with the same owner check: another user's id is "not
  found" (None), so a 404 never reveals that the id exists. Labels and prices come from the
  event's layout in memory, as the core's views do; an event this shard does not own is None.
- :meth:`idempotency_keys` reads recorded keys; :func:`purge_idempotency_keys` deletes keys older
  than their retention in bounded batches.

Every call is bounded by one timeout (`durable_lookup_timeout_s`) and raises :class:`LookupFailed`
when Postgres cannot answer in time. The caller turns that into `Unavailable` (503 with
Retry-After): "not found" is said only when Postgres said it.

Reads here see committed rows only. The actor answers from memory first, and memory is ahead of
Postgres only by what awaits its group commit, which memory itself still knows (a hold ended in an
uncommitted batch is in the closed-holds LRU, since it was just closed). Caveat: a read may come
back from Postgres with a status older than what an in-flight commit is about to store; the
router's callers only act on final statuses (confirmed, failed, ...), which are committed before
anyone is told of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from uuid import UUID

import asyncpg

from actors.inventory.changes import IdempotencyRecorded
from actors.inventory.holds import HoldStatus
from actors.inventory.layout import Layout
from actors.inventory.results import HoldItem, HoldView, OrderView, TicketView
from actors.inventory.tickets import OrderStatus, TicketStatus
from shards.loader import TICKET_STATUS_SQL
from shards.pools import QUERY_ERRORS

# (layout, currency) of an event the actor owns, or None.
EventLayouts = Callable[[UUID], tuple[Layout, str] | None]


class LookupFailed(Exception):
    """Postgres did not answer (down, timed out, connection lost): the answer is unknown."""


_HOLD = """
SELECT h.event_id, h.user_id, h.status, h.kind, h.section_id, h.seat_nos, h.quantity, h.total_cents,
       h.item_prices_cents, extract(epoch FROM h.expires_at)::float8 AS expires_at_s, o.order_id
FROM holds h LEFT JOIN orders o ON o.hold_id = h.hold_id
WHERE h.hold_id = $1"""

_TICKET_COLUMNS = f"""t.ticket_id, t.event_id, t.order_id, t.user_id, t.seat_no, t.section_id, t.replaces,
       t.price_cents, {TICKET_STATUS_SQL} AS status,
       extract(epoch FROM c.checked_in_at)::float8 AS checked_in_at_s, c.gate
FROM tickets t LEFT JOIN checkins c ON c.ticket_id = t.ticket_id"""
_TICKET = f"SELECT {_TICKET_COLUMNS} WHERE t.ticket_id = $1"
_ORDER = "SELECT event_id, user_id, status FROM orders WHERE order_id = $1"
# An order's tickets in issue order: originals first in their order, each transfer's replacement
# after the ticket it replaces (as the core stores them).
_ORDER_TICKETS = f"SELECT {_TICKET_COLUMNS} WHERE t.order_id = $1 ORDER BY t.issued_at, t.ticket_id"

_KEYS = """
SELECT i.user_id, i.key, i.fingerprint, i.result, extract(epoch FROM i.created_at)::float8 AS at_s
FROM idempotency_keys i JOIN unnest($1::text[], $2::text[]) AS k(user_id, key)
  ON i.user_id = k.user_id AND i.key = k.key"""

# The oldest `$2` keys recorded before `$1`: a batch of the purge, with how many it deleted and
# the newest creation time among them (every key older than that is gone now).
_PURGE = """
WITH doomed AS (
    SELECT user_id, key FROM idempotency_keys WHERE created_at < to_timestamp($1)
    ORDER BY created_at LIMIT $2),
deleted AS (
    DELETE FROM idempotency_keys i USING doomed d WHERE i.user_id = d.user_id AND i.key = d.key
    RETURNING i.created_at)
SELECT count(*) AS n, extract(epoch FROM max(created_at))::float8 AS newest_s FROM deleted"""


class DurableLookup:
    """The port: reads by id from the shard's own database, each bounded by `timeout_s`."""

    def __init__(self, pool: asyncpg.Pool, timeout_s: float, layouts: EventLayouts,
                 recorded: Callable[[asyncpg.Record], IdempotencyRecorded]) -> None:
        self.pool = pool
        self.timeout_s = timeout_s
        self.layouts = layouts
        self.recorded = recorded  # a stored key's row → its record (the store's result codec)

    async def hold(self, hold_id: UUID, user_id: str | None) -> HoldView | None:
        (row,) = await self._fetch((_HOLD, hold_id)) or [None]
        if row is None or (user_id is not None and row["user_id"] != user_id):
            return None
        event = self.layouts(row["event_id"])
        if event is None:
            return None
        layout, currency = event
        # The prices the hold keeps (HoldCreated): per seat if stored, else the total split evenly
        # (one section); seats across sections without prices are from before migration 008, when
        # every price was fixed: the layout's.
        quantity, seat_nos = row["quantity"], row["seat_nos"]
        prices = row["item_prices_cents"] or [row["total_cents"] // quantity] * quantity
        if not row["item_prices_cents"] and len({layout.section_of(seat_no).index for seat_no in seat_nos}) > 1:
            prices = [layout.section_of(seat_no).price_cents for seat_no in seat_nos]
        if row["kind"] == "ga":
            section = layout.section_by_id[row["section_id"]]
            items: tuple[HoldItem, ...] = (HoldItem(None, section.section_id, prices[0]),) * quantity
        else:
            items = tuple(_seat_item(layout, seat_no, price_cents)
                          for seat_no, price_cents in zip(seat_nos, prices, strict=True))
        return HoldView(hold_id, row["event_id"], HoldStatus(row["status"]), row["expires_at_s"], items,
                        sum(item.price_cents for item in items), currency, row["order_id"])

    async def ticket(self, ticket_id: UUID, user_id: str | None) -> TicketView | None:
        (row,) = await self._fetch((_TICKET, ticket_id)) or [None]
        if row is None or (user_id is not None and row["user_id"] != user_id):
            return None
        event = self.layouts(row["event_id"])
        return None if event is None else _ticket_view(event[0], row)

    async def order(self, order_id: UUID, user_id: str | None) -> OrderView | None:
        rows = await self._fetch_all([(_ORDER, order_id), (_ORDER_TICKETS, order_id)])
        orders, tickets = rows
        if not orders or (user_id is not None and orders[0]["user_id"] != user_id):
            return None
        order = orders[0]
        event = self.layouts(order["event_id"])
        if event is None:
            return None
        layout, currency = event
        successor = {row["replaces"]: row for row in tickets if row["replaces"] is not None}
        current, total_cents = [], 0
        for row in tickets:
            if row["replaces"] is not None:
                continue
            total_cents += _ticket_price(layout, row)
            shown = row
            while row["ticket_id"] in successor:  # as TicketBook.buyer_tickets: the buyer's newest
                row = successor[row["ticket_id"]]
                if row["user_id"] == shown["user_id"]:
                    shown = row
            current.append(_ticket_view(layout, shown))
        return OrderView(order_id, order["event_id"], OrderStatus(order["status"]), total_cents, currency,
                         tuple(current))

    async def idempotency_keys(self, keys: list[tuple[str, str]]) -> list[IdempotencyRecorded]:
        """The records of these (user_id, key) pairs, of any age (a key lives until purged)."""
        (rows,) = await self._fetch_all([(_KEYS, [key[0] for key in keys], [key[1] for key in keys])])
        return [self.recorded(row) for row in rows]

    async def _fetch(self, query: tuple[Any, ...]) -> list[asyncpg.Record]:
        (rows,) = await self._fetch_all([query])
        return rows

    async def _fetch_all(self, queries: list[tuple[Any, ...]]) -> list[list[asyncpg.Record]]:
        try:
            async with asyncio.timeout(self.timeout_s), self.pool.acquire() as connection:
                return [list(await connection.fetch(sql, *args)) for sql, *args in queries]
        except QUERY_ERRORS as error:
            raise LookupFailed(f"{type(error).__name__} while reading from Postgres") from error


async def purge_idempotency_keys(pool: asyncpg.Pool, cutoff_s: float, batch_keys_max: int, timeout_s: float
                                 ) -> tuple[int, float]:
    """Delete keys recorded before `cutoff_s`, `batch_keys_max` per transaction, oldest first.

    Returns (keys deleted, purged_before_s): no key recorded before `purged_before_s` is left.
    That is `cutoff_s` once a batch comes back short; if a batch fails, the batches before it
    still count (the newest key they deleted). Each batch is its own short transaction on a pooled
    connection, so the purge never holds locks for long or competes with the group commit for
    more than one connection.
    """
    deleted, purged_before_s = 0, 0.0
    while True:
        try:
            async with asyncio.timeout(timeout_s), pool.acquire() as connection:
                row = await connection.fetchrow(_PURGE, cutoff_s, batch_keys_max)
        except QUERY_ERRORS as error:
            raise PurgeInterrupted(deleted, purged_before_s) from error
        deleted += row["n"]
        if row["n"] < batch_keys_max:
            return deleted, cutoff_s
        purged_before_s = row["newest_s"]


class PurgeInterrupted(LookupFailed):
    """A purge batch failed; `deleted` keys were deleted and none before `purged_before_s` is left."""

    def __init__(self, deleted: int, purged_before_s: float) -> None:
        super().__init__(f"purge interrupted after {deleted} keys")
        self.deleted = deleted
        self.purged_before_s = purged_before_s


def _seat_item(layout: Layout, seat_no: int, price_cents: int) -> HoldItem:
    section = layout.section_of(seat_no)
    return HoldItem(section.seat_label(seat_no), section.section_id, price_cents)


def _section_of(layout: Layout, row: asyncpg.Record) -> Any:
    return layout.section_by_id[row["section_id"]]


def _ticket_price(layout: Layout, row: asyncpg.Record) -> int:
    """The price the ticket was sold at; a row from before tickets kept one: its section's (fixed then)."""
    price_cents = row["price_cents"]
    return _section_of(layout, row).price_cents if price_cents is None else int(price_cents)


def _ticket_view(layout: Layout, row: asyncpg.Record) -> TicketView:
    seat_no, gate = row["seat_no"], row["gate"]
    return TicketView(row["ticket_id"], row["event_id"], row["order_id"],
                      None if seat_no is None else layout.seat_label(seat_no), row["section_id"],
                      _ticket_price(layout, row), TicketStatus(row["status"]),
                      row["checked_in_at_s"] if gate is not None else None, gate)
