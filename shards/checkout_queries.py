"""What the checkout service and its resolver read from a shard's database (SQL stays in shards/).

Writes never happen here: every change goes through the shard actor and its group commit. These
are the reads of payment history the actor does not keep in memory — the charge behind an order,
the work the resolver must finish and the orders an event cancellation still has to refund
(router/cancellation.py) — each bounded in rows and time. Scans are keyset-paginated
(``after`` is the last row's cursor), so rows the resolver cannot settle yet are stepped over
instead of filling every page (issue 10, defect 4: a ``LIMIT 100`` scan from the start could be
starved by 100 stuck rows).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from shards.pools import QUERY_ERRORS, PoolOf

Cursor = tuple[datetime, UUID]


class QueryFailed(Exception):
    """The shard's database did not answer (down, timed out, connection lost), or does not hold
    what the caller was sent there for (its slot moved: `order_charge`)."""


class PinnedHold(NamedTuple):
    hold_id: UUID
    user_id: str
    cursor: Cursor


class PaymentRow(NamedTuple):
    """A `payments` row, as `actors.protocol.PaymentRecord` has it, plus its scan cursor."""

    payment_id: UUID
    event_id: UUID
    hold_id: UUID
    order_id: UUID | None
    user_id: str
    kind: str
    gateway: str
    gateway_ref: str | None
    idempotency_key: str
    amount_cents: int
    currency: str
    status: str
    cursor: Cursor
    past_horizon: bool = False  # for charges of unknown outcome: looked up long enough


_PAYMENT_COLUMNS = """payment_id, event_id, hold_id, order_id, user_id, kind, gateway, gateway_ref, idempotency_key,
                      amount_cents, rtrim(currency) AS currency, status"""


def _payment(row: Any, cursor_column: str) -> PaymentRow:
    return PaymentRow(row["payment_id"], row["event_id"], row["hold_id"], row["order_id"], row["user_id"],
                      row["kind"], row["gateway"], row["gateway_ref"], row["idempotency_key"], row["amount_cents"],
                      row["currency"], row["status"], (row[cursor_column], row["payment_id"]),
                      bool(row.get("past_horizon", False)))


class CheckoutQueries:
    def __init__(self, pool_of: PoolOf, timeout_s: float) -> None:
        self._pool_of = pool_of
        self._timeout_s = timeout_s

    async def _fetch(self, shard_id: int, query: str, *arguments: Any) -> list[Any]:
        try:
            pool = await self._pool_of(shard_id)
            return list(await pool.fetch(query, *arguments, timeout=self._timeout_s))
        except QUERY_ERRORS as error:
            raise QueryFailed(f"shard {shard_id} database: {type(error).__name__}") from error

    async def order_charge(self, shard_id: int, order_id: UUID) -> PaymentRow | None:
        """The succeeded charge that paid for an order; None for a free order. Raises QueryFailed
        when the order is not in this shard's database at all: its slot moved to another shard since
        the caller read the shard map (shards/slot_moves.py), and "no charge" would be a lie that
        refunds the tickets but keeps the money."""
        rows = await self._fetch(shard_id, f"""SELECT {_PAYMENT_COLUMNS}, created_at FROM payments
            WHERE order_id = $1 AND kind = 'charge' AND status = 'succeeded'""", order_id)
        if rows:
            return _payment(rows[0], "created_at")
        if not await self._fetch(shard_id, "SELECT 1 FROM orders WHERE order_id = $1", order_id):
            raise QueryFailed(f"order {order_id} is not in shard {shard_id}'s database (its slot moved): retry")
        return None

    async def cancelled_orders(self, shard_id: int, after: UUID | None, limit: int) -> list[tuple[UUID, UUID]]:
        """(order id, event id) of the confirmed orders of cancelled events, in order id order: what
        the cancellations on this shard still have to refund."""
        rows = await self._fetch(shard_id, """SELECT o.order_id, o.event_id
            FROM events e JOIN orders o ON o.event_id = e.event_id
            WHERE e.status = 'cancelled' AND o.status = 'confirmed' AND ($1::uuid IS NULL OR o.order_id > $1)
            ORDER BY o.order_id LIMIT $2""", after, limit)
        return [(row["order_id"], row["event_id"]) for row in rows]

    async def cancellation_backlog(self, shard_id: int) -> int:
        """How many orders of cancelled events are not refunded yet."""
        rows = await self._fetch(shard_id, """SELECT count(*) AS orders FROM events e
            JOIN orders o ON o.event_id = e.event_id WHERE e.status = 'cancelled' AND o.status = 'confirmed'""")
        return int(rows[0]["orders"])

    async def pinned_holds(self, shard_id: int, older_than_s: float, after: Cursor | None,
                           limit: int) -> list[PinnedHold]:
        """Holds pinned for payment longer than `older_than_s`, in (updated_at, hold_id) order."""
        after_at, after_id = after if after is not None else (None, None)
        rows = await self._fetch(shard_id, """SELECT hold_id, user_id, updated_at FROM holds
            WHERE status = 'payment_pending' AND updated_at < now() - make_interval(secs => $1)
              AND ($2::timestamptz IS NULL OR (updated_at, hold_id) > ($2, $3::uuid))
            ORDER BY updated_at, hold_id LIMIT $4""", older_than_s, after_at, after_id, limit)
        return [PinnedHold(row["hold_id"], row["user_id"], (row["updated_at"], row["hold_id"])) for row in rows]

    async def pending_refunds(self, shard_id: int, older_than_s: float, after: Cursor | None,
                              limit: int) -> list[PaymentRow]:
        """Refunds recorded as owed and not yet confirmed by the gateway."""
        after_at, after_id = after if after is not None else (None, None)
        rows = await self._fetch(shard_id, f"""SELECT {_PAYMENT_COLUMNS}, created_at FROM payments
            WHERE kind = 'refund' AND status = 'pending' AND updated_at < now() - make_interval(secs => $1)
              AND ($2::timestamptz IS NULL OR (created_at, payment_id) > ($2, $3::uuid))
            ORDER BY created_at, payment_id LIMIT $4""", older_than_s, after_at, after_id, limit)
        return [_payment(row, "created_at") for row in rows]

    async def unknown_charges(self, shard_id: int, older_than_s: float, horizon_s: float, after: Cursor | None,
                              limit: int) -> list[PaymentRow]:
        """Charges of failed holds that were not found when the hold was given up; `past_horizon`
        once they have been looked up for `horizon_s`."""
        after_at, after_id = after if after is not None else (None, None)
        rows = await self._fetch(shard_id, f"""SELECT {_PAYMENT_COLUMNS}, created_at,
                   created_at < now() - make_interval(secs => $2) AS past_horizon
            FROM payments
            WHERE kind = 'charge' AND status = 'unknown' AND updated_at < now() - make_interval(secs => $1)
              AND ($3::timestamptz IS NULL OR (created_at, payment_id) > ($3, $4::uuid))
            ORDER BY created_at, payment_id LIMIT $5""", older_than_s, horizon_s, after_at, after_id, limit)
        return [_payment(row, "created_at") for row in rows]
