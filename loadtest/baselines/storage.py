"""What the Postgres baselines share: their pool, the hold row, the replay of a known key.

Bounds are the product's defaults, so no design waits longer than the product would: a DB call
times out after `db_call_timeout_s` (3 s), a row lock after `LOCK_TIMEOUT_MS` (a lock held
longer means something is wrong, STYLE §8), and the pool has `db_pool_size_max` connections per
worker, opened at start-up so that no connection is made during a measurement.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from loadtest.baselines.asgi import BaselineConfig, HoldRequest, Refusal, hold_body

DB_CALL_TIMEOUT_S = 3.0
POOL_ACQUIRE_TIMEOUT_S = 3.0
LOCK_TIMEOUT_MS = 2000

INSERT_HOLD = """
INSERT INTO holds (id, event_id, section, user_id, quantity, seat_nos, expires_at, total_cents, idempotency_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""

REPLAY = """
SELECT h.id, h.event_id, h.section, h.quantity, h.expires_at, h.total_cents,
       (SELECT array_agg(s.label ORDER BY s.seat_no) FROM seats s
        WHERE s.event_id = h.event_id AND s.section = h.section AND s.seat_no = ANY(h.seat_nos)) AS labels
FROM holds h WHERE h.user_id = $1 AND h.idempotency_key = $2
"""


async def open_pool(dsn: str, size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=size, max_size=size, command_timeout=DB_CALL_TIMEOUT_S,
        server_settings={"lock_timeout": str(LOCK_TIMEOUT_MS), "synchronous_commit": "on",
                         "application_name": "bench-baseline"})
    if pool is None:
        raise RuntimeError("asyncpg returned no pool")
    return pool


def hold_row(request: HoldRequest, seat_nos: list[int] | None, price_cents: int) -> tuple[Any, ...]:
    """The INSERT_HOLD arguments of a hold of `request`."""
    return (request.hold_id, request.event_id, request.section, request.user_id, request.quantity, seat_nos,
            request.expires_at, price_cents * request.quantity, request.idempotency_key)


async def replay(connection: asyncpg.Connection, request: HoldRequest) -> dict[str, Any]:
    """The first answer to this (user, key): the insert just met the unique key of an earlier hold."""
    row = await connection.fetchrow(REPLAY, request.user_id, request.idempotency_key)
    if row is None:  # the earlier hold's insert was itself rolled back meanwhile: let the client retry
        raise Refusal(503, "SHARD_UNAVAILABLE", "retry")
    if (row["event_id"], row["section"], row["quantity"]) != (request.event_id, request.section, request.quantity):
        raise Refusal(422, "IDEMPOTENCY_KEY_REUSED", "this key was used with another body")
    labels: list[str | None] = list(row["labels"] or [None] * int(row["quantity"]))
    return hold_body(row["id"], row["event_id"], row["section"], row["expires_at"], labels,
                     int(row["total_cents"]) // int(row["quantity"]))


async def section_refusal(connection: asyncpg.Connection, request: HoldRequest) -> Refusal:
    """Why a hold took nothing: the section does not exist, or too little is left (and how much)."""
    if request.best_available:
        available = await connection.fetchval(
            "SELECT count(*) FILTER (WHERE status = 'available') FROM seats WHERE event_id = $1 AND section = $2 "
            "HAVING count(*) > 0", request.event_id, request.section)
    else:
        available = await connection.fetchval(
            "SELECT capacity - held - sold FROM pools WHERE event_id = $1 AND section = $2",
            request.event_id, request.section)
    if available is None:
        return Refusal(404, "EVENT_NOT_FOUND", "no such event or section")
    return Refusal(409, "INSUFFICIENT_INVENTORY", "not enough left", available=int(available))



class PooledStore:
    """What every database baseline does around its hold: an asyncpg pool of the configured size,
    opened at start-up, and a connection per hold within `POOL_ACQUIRE_TIMEOUT_S`."""

    def __init__(self, config: BaselineConfig) -> None:
        self.config = config
        self.pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self.pool = await open_pool(self.config.dsn, self.config.pool_size)

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self.pool is None:
            raise Refusal(503, "SHARD_UNAVAILABLE", "not started")
        async with self.pool.acquire(timeout=POOL_ACQUIRE_TIMEOUT_S) as connection:
            yield connection
