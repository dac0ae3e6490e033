"""The strongest plain-Postgres design we could write: one statement, one round trip per hold.

GA: the conditional update is the check, and the insert of the hold hangs off its ``RETURNING``
in the same statement (so in one implicit transaction, committed with the statement):

    WITH pool AS (UPDATE pools SET held = held + $n
                  WHERE event_id = $e AND section = $s AND held + sold + $n <= capacity
                  RETURNING price_cents)
    INSERT INTO holds … SELECT … FROM pool RETURNING …

No row is read before it is locked, nothing is sent while the lock is held, and the lock lives
for one statement plus the commit's WAL flush. That flush is still serial on one hot row: the
next update of the pool waits for it (a striped counter — the pool split into k rows — would
lift that, at the price of a multi-row "how many are left"; we keep the single row every seed
and most real systems have).

Best-available seats: ``FOR UPDATE SKIP LOCKED`` picks the n lowest free seats that no other
transaction is taking, so concurrent holds take different seats instead of queueing on the same
ones; the update and the insert happen only if all n were found (all or nothing), else the
statement changes nothing and its locks go with it. Near sell-out, SKIP LOCKED can answer "not
enough" while seats are locked by another transaction that will give them back: a refusal a
retry resolves, never an oversell.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from loadtest.baselines.asgi import HoldRequest, HoldsApp, hold_body
from loadtest.baselines.schema import HOLD_SECONDS
from loadtest.baselines.storage import PooledStore, replay, section_refusal

HOLD_GENERAL_ADMISSION = """
WITH pool AS (
    UPDATE pools SET held = held + $5
    WHERE event_id = $2 AND section = $3 AND held + sold + $5 <= capacity
    RETURNING price_cents)
INSERT INTO holds (id, event_id, section, user_id, quantity, seat_nos, expires_at, total_cents, idempotency_key)
SELECT $1, $2, $3, $4, $5, NULL, $6, pool.price_cents * $5, $7 FROM pool
RETURNING total_cents / quantity AS price_cents
"""

HOLD_BEST_AVAILABLE = """
WITH picked AS (
    SELECT seat_no FROM seats
    WHERE event_id = $2 AND section = $3 AND status = 'available'
    ORDER BY seat_no LIMIT $5
    FOR UPDATE SKIP LOCKED),
enough AS (SELECT count(*) = $5 AS ok FROM picked),
claimed AS (
    UPDATE seats SET status = 'held', hold_id = $1
    FROM picked, enough
    WHERE enough.ok AND seats.event_id = $2 AND seats.section = $3 AND seats.seat_no = picked.seat_no
    RETURNING seats.seat_no, seats.label, seats.price_cents),
hold AS (
    INSERT INTO holds (id, event_id, section, user_id, quantity, seat_nos, expires_at, total_cents, idempotency_key)
    SELECT $1, $2, $3, $4, $5, (SELECT array_agg(seat_no ORDER BY seat_no) FROM claimed), $6,
           (SELECT sum(price_cents) FROM claimed), $7
    FROM enough WHERE enough.ok
    RETURNING id)
SELECT claimed.seat_no, claimed.label, claimed.price_cents FROM claimed, hold ORDER BY claimed.seat_no
"""


def _arguments(request: HoldRequest) -> tuple[Any, ...]:
    return (request.hold_id, request.event_id, request.section, request.user_id, request.quantity,
            request.expires_at, request.idempotency_key)


class ConditionalStore(PooledStore):
    async def hold(self, request: HoldRequest) -> dict[str, Any]:
        async with self.connection() as connection:
            try:
                if request.best_available:
                    seats = await connection.fetch(HOLD_BEST_AVAILABLE, *_arguments(request))
                    if not seats:
                        raise await section_refusal(connection, request)
                    return hold_body(request.hold_id, request.event_id, request.section, request.expires_at,
                                     [str(seat["label"]) for seat in seats], int(seats[0]["price_cents"]))
                price_cents = await connection.fetchval(HOLD_GENERAL_ADMISSION, *_arguments(request))
                if price_cents is None:
                    raise await section_refusal(connection, request)
                return hold_body(request.hold_id, request.event_id, request.section, request.expires_at,
                                 [None] * request.quantity, int(price_cents))
            except asyncpg.UniqueViolationError:
                return await replay(connection, request)


app = HoldsApp(ConditionalStore, HOLD_SECONDS)
