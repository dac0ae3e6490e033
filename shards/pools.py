"""Connection pools of the shard databases for the router's direct reads (`shards/queries.py`,
`shards/checkout_queries.py`), and the failures that mean "the database is not reachable".

The router never imports asyncpg: it holds a `ShardPools`, hands `ShardPools.pool` to the query
objects, and classifies a lost connection with `CONNECTION_ERRORS` (a 503, not a 500). The shard
actors have pools of their own (one writer connection, one pool for recovery and lookups).

Pools are made lazily, one per shard on first use, and a pool that failed to be made is tried
again on the next call, so a router worker that starts while a database is down becomes ready by
itself once it is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

# One warm connection per shard keeps the first request after a quiet period fast; idle ones beyond
# it are closed after a minute, so a burst does not pin `db_pool_size_max` connections per worker.
POOL_SIZE_MIN = 1
POOL_INACTIVE_CONNECTION_LIFETIME_S = 60.0

# A query whose database is down, restarting, refusing connections or out of them: an outage,
# answered like one (503 + Retry-After), never a bug (500). OSError and TimeoutError (a pool's
# deadline) are among these too, and the router lists them with Redis' own.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError, asyncpg.exceptions.OperatorInterventionError,
)
# Everything a read may raise that is the database's doing rather than a bug in the caller: every
# server error, a broken connection, a socket error, a timeout.
QUERY_ERRORS: tuple[type[Exception], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

PoolOf = Callable[[int], Awaitable[asyncpg.Pool]]


class ShardPools:
    """One asyncpg pool per shard database, made on first use; `terminate` at shutdown."""

    def __init__(self, dsns: Sequence[str], size_max: int, call_timeout_s: float) -> None:
        self._dsns = list(dsns)
        self._size_max = size_max
        self._call_timeout_s = call_timeout_s
        self._pools: dict[int, asyncpg.Pool] = {}
        self._lock = asyncio.Lock()

    async def pool(self, shard_id: int) -> asyncpg.Pool:
        pool = self._pools.get(shard_id)
        if pool is not None:
            return pool
        async with self._lock:
            pool = self._pools.get(shard_id)
            if pool is None:
                pool = await asyncpg.create_pool(
                    self._dsns[shard_id],
                    min_size=POOL_SIZE_MIN,
                    max_size=self._size_max,
                    timeout=self._call_timeout_s,
                    command_timeout=self._call_timeout_s,
                    max_inactive_connection_lifetime=POOL_INACTIVE_CONNECTION_LIFETIME_S,
                )
                self._pools[shard_id] = pool
        return pool

    def terminate(self) -> None:
        """Close every pool at once (shutdown: in-flight queries fail, nothing waits)."""
        for pool in self._pools.values():
            pool.terminate()
        self._pools.clear()


class OneReaderPerShard:
    """Queries of a relay that must have one reader per shard at a time (the webhook and mail relays
    over the outbox): a round holds the shard's advisory lock `lock_key` + shard id, taken without
    waiting — a shard another worker holds is skipped this round."""

    lock_key: int

    def __init__(self, pool_of: PoolOf) -> None:
        self._pool_of = pool_of

    async def pool(self, shard_id: int) -> Any:
        return await self._pool_of(shard_id)

    @asynccontextmanager
    async def holding(self, shard_id: int, timeout_s: float) -> AsyncIterator[Any]:
        """A connection of the shard holding its lock, or None when another reader holds it."""
        pool = await self.pool(shard_id)
        async with pool.acquire(timeout=timeout_s) as connection:
            if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key + shard_id):
                yield None
                return
            try:
                yield connection
            finally:
                await connection.fetchval("SELECT pg_advisory_unlock($1)", self.lock_key + shard_id)
