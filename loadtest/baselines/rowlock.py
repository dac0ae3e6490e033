"""The seeds' design: one transaction per hold, row locks on the inventory, synchronous commit.

As the seeds write it (`SELECT … FOR UPDATE`, check, update, insert the reservation, commit):

    BEGIN
    SELECT capacity, held, sold, price_cents FROM pools WHERE … FOR UPDATE      -- GA
      or SELECT seat_no, label, price_cents FROM seats WHERE … AND status = 'available'
         ORDER BY seat_no LIMIT n FOR UPDATE                                     -- best-available
    UPDATE pools SET held = held + n …   or   UPDATE seats SET status = 'held', hold_id = … …
    INSERT INTO holds …
    COMMIT

Five round trips, and the lock on the hot row is held across four of them and the commit's WAL
flush: every hold on one pool waits for the one before it. For best-available, every
transaction queues on the same first free seats and, once their holder commits, Postgres moves
it on to the next free ones (READ COMMITTED re-checks a locked row's condition after the wait).
The seeds' coarse Redis lock in front of the database is left out: it serialises the same way
and only adds a round trip.

``BENCH_UNSAFE=1`` (tests only) reads without ``FOR UPDATE`` and waits a little before writing:
the lost update the lock exists to prevent, for the test's negative control.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from loadtest.baselines.asgi import BaselineConfig, HoldRequest, HoldsApp, hold_body
from loadtest.baselines.schema import HOLD_SECONDS
from loadtest.baselines.storage import INSERT_HOLD, PooledStore, hold_row, replay, section_refusal

UNSAFE_WINDOW_S = 0.005


class RowLockStore(PooledStore):
    def __init__(self, config: BaselineConfig) -> None:
        super().__init__(config)
        self.lock = "" if config.unsafe else " FOR UPDATE"

    async def hold(self, request: HoldRequest) -> dict[str, Any]:
        async with self.connection() as connection:
            try:
                async with connection.transaction():
                    if request.best_available:
                        return await self._seats(connection, request)
                    return await self._general_admission(connection, request)
            except asyncpg.UniqueViolationError:
                return await replay(connection, request)

    async def _general_admission(self, connection: asyncpg.Connection, request: HoldRequest) -> dict[str, Any]:
        pool = await connection.fetchrow(
            f"SELECT capacity, held, sold, price_cents FROM pools WHERE event_id = $1 AND section = $2{self.lock}",
            request.event_id, request.section)
        if pool is None or pool["held"] + pool["sold"] + request.quantity > pool["capacity"]:
            raise await section_refusal(connection, request)
        if self.config.unsafe:
            await asyncio.sleep(UNSAFE_WINDOW_S)
            await connection.execute("UPDATE pools SET held = $3 WHERE event_id = $1 AND section = $2",
                                     request.event_id, request.section, pool["held"] + request.quantity)
        else:
            await connection.execute("UPDATE pools SET held = held + $3 WHERE event_id = $1 AND section = $2",
                                     request.event_id, request.section, request.quantity)
        price_cents = int(pool["price_cents"])
        await connection.execute(INSERT_HOLD, *hold_row(request, None, price_cents))
        return hold_body(request.hold_id, request.event_id, request.section, request.expires_at,
                         [None] * request.quantity, price_cents)

    async def _seats(self, connection: asyncpg.Connection, request: HoldRequest) -> dict[str, Any]:
        seats = await connection.fetch(
            "SELECT seat_no, label, price_cents FROM seats WHERE event_id = $1 AND section = $2 "
            f"AND status = 'available' ORDER BY seat_no LIMIT $3{self.lock}",
            request.event_id, request.section, request.quantity)
        if len(seats) < request.quantity:
            raise await section_refusal(connection, request)
        if self.config.unsafe:
            await asyncio.sleep(UNSAFE_WINDOW_S)
        seat_nos = [int(seat["seat_no"]) for seat in seats]
        await connection.execute(
            "UPDATE seats SET status = 'held', hold_id = $4 WHERE event_id = $1 AND section = $2 "
            "AND seat_no = ANY($3::integer[])", request.event_id, request.section, seat_nos, request.hold_id)
        price_cents = int(seats[0]["price_cents"])
        await connection.execute(INSERT_HOLD, *hold_row(request, seat_nos, price_cents))
        return hold_body(request.hold_id, request.event_id, request.section, request.expires_at,
                         [str(seat["label"]) for seat in seats], price_cents)


app = HoldsApp(RowLockStore, HOLD_SECONDS)
