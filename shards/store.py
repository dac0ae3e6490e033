"""The shard actor's port to its database (STYLE §2), and the asyncpg adapter behind it.

A shard actor needs exactly five things from storage, and `ShardStore` is those five:

- `take_lease` — become the shard's only writer (a new epoch; `shards.lease`);
- `load` — everything recovery rebuilds memory from: the shard's events with their holds, orders
  and tickets, and the newest idempotency keys (`shards.loader`);
- `commit` — one group-commit transaction, fenced by the epoch (`shards.writer`); `probe` — the
  same changes, one command at a time under savepoints, always rolled back (poison isolation);
- `lookup` — what memory no longer keeps, read back by id (`shards.lookup`), and `purge_keys`,
  which deletes idempotency keys older than their retention.

`PostgresShardStore` is the one real adapter: a small pool for recovery, lookups and the purge,
and a dedicated connection for the group commit (its timestamptz codec is the writer's, and it
skips the reset query a pool sends on every release). Tests inject faults by wrapping it
(`shards.faults`), never through switches in production code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from actors.inventory.changes import IdempotencyRecorded
from cluster.settings import ShardBounds
from shards.codec import ResultCodec, core_result_codec
from shards.event_rows import configure_json
from shards.lease import take_lease
from shards.loader import EventRows, load_events, load_idempotency
from shards.lookup import DurableLookup, EventLayouts, purge_idempotency_keys
from shards.pools import QUERY_ERRORS
from shards.slot_moves import SlotRow, fence, seed_and_read
from shards.writer import connect_writer, plan_batch, probe_commands, write_batch

# What the actor treats as "the database did not answer" when it starts: retry, do not crash.
DATABASE_ERRORS = QUERY_ERRORS


@dataclass(frozen=True, slots=True)
class StoreBounds:
    """The bounds a store works within (from `cluster.settings.ShardBounds`)."""

    db_call_timeout_s: float
    db_pool_size_min: int
    db_pool_size_max: int
    recovery_timeout_s: float
    durable_lookup_timeout_s: float
    idempotency_purge_batch_keys_max: int

    @classmethod
    def of(cls, bounds: ShardBounds) -> StoreBounds:
        return cls(db_call_timeout_s=bounds.db_call_timeout_s, db_pool_size_min=bounds.db_pool_size_min,
                   db_pool_size_max=bounds.db_pool_size_max,
                   recovery_timeout_s=bounds.recovery_timeout_s,
                   durable_lookup_timeout_s=bounds.durable_lookup_timeout_s,
                   idempotency_purge_batch_keys_max=bounds.idempotency_purge_batch_keys_max)


@dataclass(frozen=True, slots=True)
class LoadedShard:
    """What recovery rebuilds memory from. `keys` are the newest recorded idempotency keys, oldest
    first; `keys_complete` is False when more were recorded than `keys_max` (memory then looks
    misses up), and `keys_cut_s` the creation time of the newest key left out."""

    events: dict[UUID, EventRows]
    keys: list[IdempotencyRecorded]
    keys_complete: bool
    keys_cut_s: float | None


class ShardStore(Protocol):
    async def open(self) -> None: ...

    def close(self) -> None: ...

    async def take_lease(self, holder: str) -> int: ...

    async def load(self, slots: list[int], keys_max: int) -> LoadedShard: ...

    async def commit(self, changes: list[Any], epoch: int) -> None: ...

    async def probe(self, change_groups: list[tuple[Any, ...]], epoch: int) -> list[BaseException | None]: ...

    def lookup(self, layouts: EventLayouts) -> DurableLookup | None: ...

    async def purge_keys(self, cutoff_s: float) -> tuple[int, float]: ...

    async def slot_rows(self, configured: list[int]) -> list[SlotRow]: ...

    async def fence_slots(self, slots: list[int], version: int) -> int: ...


StoreFactory = Callable[[int, str, StoreBounds], ShardStore]


class PostgresShardStore:
    def __init__(self, shard_id: int, dsn: str, bounds: StoreBounds) -> None:
        self.shard_id = shard_id
        self.dsn = dsn
        self.bounds = bounds
        self.codec: ResultCodec = core_result_codec()
        self._pool: asyncpg.Pool | None = None
        self._writer: asyncpg.Connection | None = None

    async def open(self) -> None:
        timeout_s = self.bounds.db_call_timeout_s
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=self.bounds.db_pool_size_min, max_size=self.bounds.db_pool_size_max, init=configure_json,
            command_timeout=timeout_s, timeout=timeout_s)

    def close(self) -> None:
        """Drop every connection at once (a failed start, a stopping actor): nothing is waited for."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
        self._drop_writer()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool

    async def take_lease(self, holder: str) -> int:
        async with self.pool.acquire(timeout=self.bounds.recovery_timeout_s) as connection:
            return await take_lease(connection, self.shard_id, holder)

    async def load(self, slots: list[int], keys_max: int) -> LoadedShard:
        """Each load on its own pooled connection, all at once: safe once the lease is taken, since
        no older epoch can commit any more (`take_lease` first)."""
        timeout_s = self.bounds.recovery_timeout_s

        async def keys() -> list[Any]:
            async with self.pool.acquire(timeout=timeout_s) as connection:
                return await load_idempotency(connection, keys_max, timeout_s=timeout_s)

        events, records = await asyncio.gather(load_events(self.pool, slots, timeout_s=timeout_s), keys())
        complete = len(records) <= keys_max
        kept = records[-keys_max:] if keys_max else []
        return LoadedShard(events, [self.recorded(record) for record in kept], complete,
                           None if complete else float(records[0]["at_s"]))

    def recorded(self, record: Any) -> IdempotencyRecorded:
        return IdempotencyRecorded(record["user_id"], record["key"], bytes(record["fingerprint"]),
                                   self.codec.decode(record["result"]), record["at_s"])

    async def commit(self, changes: list[Any], epoch: int | None) -> None:
        """One fenced transaction (`epoch` None only for `shards.faults.UnfencedStore`)."""
        plan = plan_batch(changes)
        connection = await self._writer_connection()
        try:
            await write_batch(connection, plan, self.codec, shard_id=self.shard_id, epoch=epoch)
        except BaseException:
            # Whatever state the connection is in (mid-transaction, broken, in doubt) is not worth
            # reusing: terminating it rolls back what can be, the actor rebuilds, and the next
            # commit opens a fresh connection.
            self._drop_writer()
            raise

    async def probe(self, change_groups: list[tuple[Any, ...]], epoch: int | None) -> list[BaseException | None]:
        """Which command's changes does Postgres refuse? On a connection of its own, rolled back."""
        connection = await connect_writer(self.dsn, timeout_s=self.bounds.db_call_timeout_s)
        try:
            return await probe_commands(connection, change_groups, self.codec, shard_id=self.shard_id, epoch=epoch)
        finally:
            connection.terminate()

    def lookup(self, layouts: EventLayouts) -> DurableLookup | None:
        return DurableLookup(self.pool, self.bounds.durable_lookup_timeout_s, layouts, self.recorded)

    async def purge_keys(self, cutoff_s: float) -> tuple[int, float]:
        return await purge_idempotency_keys(self.pool, cutoff_s, self.bounds.idempotency_purge_batch_keys_max,
                                            self.bounds.durable_lookup_timeout_s)

    async def slot_rows(self, configured: list[int]) -> list[SlotRow]:
        """This database's slot ownership (shards/slot_moves.py), the settings' slots seeded first."""
        async with self.pool.acquire(timeout=self.bounds.recovery_timeout_s) as connection:
            return await seed_and_read(connection, configured)

    async def fence_slots(self, slots: list[int], version: int) -> int:
        async with self.pool.acquire(timeout=self.bounds.db_call_timeout_s) as connection:
            return await fence(connection, slots, version)

    async def _writer_connection(self) -> asyncpg.Connection:
        if self._writer is None or self._writer.is_closed():
            self._writer = await connect_writer(self.dsn, timeout_s=self.bounds.db_call_timeout_s)
        return self._writer

    def _drop_writer(self) -> None:
        if self._writer is not None:
            self._writer.terminate()
            self._writer = None
