"""The seeds' Redis design: the inventory in Redis behind a Lua script, the hold row in Postgres.

Per hold: one ``EVALSHA`` of `lua/take_inventory.lua` (check and take the GA tickets or the n
lowest free seats, index the hold by expiry: the seeds' ``reserve_tickets.lua`` without the
pub/sub), then one ``INSERT`` of the hold row into Postgres, committed on its own with
synchronous commit. Two round trips, no lock held across either, and Postgres commits from many
connections at once share WAL flushes: this is the design that scales with the pool.

The weakness the seeds accept: Redis and Postgres are not one transaction. If the insert fails
the inventory is given back (`lua/give_back.lua`); if that fails too (Redis gone), the tickets
are lost to sale until a reconciliation job notices — never oversold, but not exact either.
Redis keeps the counters with ``appendfsync everysec``, as the product's embedded Redis does, so
a crash of Redis can forget up to a second of holds that Postgres has: the seeds rebuild the
counters from Postgres at start-up for that reason; the benchmark never crashes Redis.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, cast

import asyncpg
import redis.asyncio as aioredis

from loadtest.baselines.asgi import BaselineConfig, HoldRequest, HoldsApp, Refusal, hold_body
from loadtest.baselines.schema import (
    GA_PRICE_CENTS,
    GA_SECTION,
    HOLD_SECONDS,
    SEAT_PRICE_CENTS,
    SEATED_SECTION,
    EventLayout,
    RedisInventory,
    seat_label,
)
from loadtest.baselines.storage import INSERT_HOLD, POOL_ACQUIRE_TIMEOUT_S, hold_row, open_pool, replay

LUA = Path(__file__).resolve().parent / "lua"
REDIS_TIMEOUT_S = 1.0  # the product's `redis_timeout_s`
SEED_CHUNK_SEATS = 10_000


def inventory_key(event_id: uuid.UUID, section: str) -> str:
    return f"bench:inventory:{event_id}:{section}"


def section_key(event_id: uuid.UUID, section: str) -> str:
    return f"bench:section:{event_id}:{section}"


def expiry_key(event_id: uuid.UUID) -> str:
    return f"bench:expiry:{event_id}"


def redis_client(url: str, connections: int) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, max_connections=connections, socket_timeout=REDIS_TIMEOUT_S,
                                   socket_connect_timeout=REDIS_TIMEOUT_S)


class RedisLuaStore:
    def __init__(self, config: BaselineConfig) -> None:
        self.config = config
        self.pool: asyncpg.Pool | None = None
        self.redis: aioredis.Redis | None = None

    async def start(self) -> None:
        self.pool = await open_pool(self.config.dsn, self.config.pool_size)
        # As many Redis connections as the router's default pool would open under this load.
        self.redis = redis_client(self.config.redis_url, 64)
        self.take = self.redis.register_script((LUA / "take_inventory.lua").read_text())
        self.give_back = self.redis.register_script((LUA / "give_back.lua").read_text())

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def hold(self, request: HoldRequest) -> dict[str, Any]:
        if self.pool is None:
            raise Refusal(503, "SHARD_UNAVAILABLE", "not started")
        kind = "seats" if request.best_available else "ga"
        keys = [inventory_key(request.event_id, request.section), section_key(request.event_id, request.section),
                expiry_key(request.event_id)]
        taken = await self.take(keys=keys, args=[kind, request.quantity, str(request.hold_id),
                                                 int(request.expires_at.timestamp() * 1000)])
        if taken[0] == -1:
            raise Refusal(404, "EVENT_NOT_FOUND", "no such event or section")
        if taken[0] == 0:
            raise Refusal(409, "INSUFFICIENT_INVENTORY", "not enough left", available=int(taken[1]))
        price_cents, seats_per_row = int(taken[1]), int(taken[2])
        seat_nos = [int(seat) for seat in taken[3:]] if request.best_available else None
        try:
            async with self.pool.acquire(timeout=POOL_ACQUIRE_TIMEOUT_S) as connection:
                await connection.execute(INSERT_HOLD, *hold_row(request, seat_nos, price_cents))
        except asyncpg.UniqueViolationError:  # a retry: the first hold stands, this one's take goes back
            await self._give_back(keys, kind, request, seat_nos)
            async with self.pool.acquire(timeout=POOL_ACQUIRE_TIMEOUT_S) as connection:
                return await replay(connection, request)
        except BaseException:
            await self._give_back(keys, kind, request, seat_nos)
            raise
        labels: list[str | None] = ([seat_label(seat, seats_per_row, request.section) for seat in seat_nos]
                                    if seat_nos is not None else [None] * request.quantity)
        return hold_body(request.hold_id, request.event_id, request.section, request.expires_at, labels, price_cents)

    async def _give_back(self, keys: list[str], kind: str, request: HoldRequest, seat_nos: list[int] | None) -> None:
        await self.give_back(keys=[keys[0], keys[2]],
                             args=[kind, request.quantity, str(request.hold_id), *(seat_nos or [])])


async def seed_event(redis_url: str, event_id: uuid.UUID, layout: EventLayout) -> None:
    """Put an event's inventory (already in Postgres, `schema.create_event`) into Redis."""
    client = redis_client(redis_url, 2)
    try:
        await client.set(inventory_key(event_id, GA_SECTION), layout.ga_capacity)
        await client.hset(section_key(event_id, GA_SECTION),
                          mapping={"price_cents": GA_PRICE_CENTS, "seats_per_row": 0})
        await client.hset(section_key(event_id, SEATED_SECTION),
                          mapping={"price_cents": SEAT_PRICE_CENTS, "seats_per_row": layout.seats_per_row})
        for first in range(0, layout.seat_count, SEED_CHUNK_SEATS):
            seats = range(first, min(layout.seat_count, first + SEED_CHUNK_SEATS))
            await client.zadd(inventory_key(event_id, SEATED_SECTION), {str(seat): seat for seat in seats})
    finally:
        await client.aclose()


async def read_inventory(redis_url: str, event_id: uuid.UUID) -> RedisInventory:
    client = redis_client(redis_url, 2)
    try:
        remaining = await client.get(inventory_key(event_id, GA_SECTION))
        free = await client.zrange(inventory_key(event_id, SEATED_SECTION), 0, -1)
    finally:
        await client.aclose()
    return RedisInventory(int(remaining or 0), {int(cast(bytes, seat)) for seat in free})


app = HoldsApp(RedisLuaStore, HOLD_SECONDS)
