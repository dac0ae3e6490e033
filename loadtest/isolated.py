"""A shard actor of its own on a database of its own, inside a running deployment's Ray and
Postgres: what the actor-level tests and benchmarks drive, with the production actor options."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from shards.migrate import apply_migrations, with_database

ALL_SLOTS = tuple(range(256))
MIGRATION_TIMEOUT_S = 60.0
START_TIMEOUT_S = 120.0


def create_database(base_dsn: str, prefix: str) -> str:
    """Create and migrate `<prefix>_<random>` on the server of `base_dsn`; returns its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        admin = await asyncpg.connect(with_database(base_dsn, "postgres"))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        await apply_migrations(with_database(base_dsn, name), timeout_s=MIGRATION_TIMEOUT_S)

    asyncio.run(create())
    return with_database(base_dsn, name)


def drop_database(dsn: str) -> None:
    name = dsn.rsplit("/", 1)[1].split("?", 1)[0]

    async def drop() -> None:
        admin = await asyncpg.connect(with_database(dsn, "postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(drop())


def start_isolated_shard(dsn: str, *, namespace: str, name_prefix: str, store: Any = None,
                         idempotency: bool = True, isolation: bool = True, slots: tuple[int, ...] = ALL_SLOTS,
                         **bounds: Any) -> Any:
    """A `ShardActor` owning `slots` (every slot) of `dsn`'s database, started and recovered; `bounds`
    override the deployment's defaults (`cluster.settings.ShardBounds`).

    `store` (a wrapper from `shards.faults`), `idempotency` and `isolation` exist for negative
    controls only (STYLE §10).
    """
    import ray

    from actors.actor import ShardActor, ShardConfig
    from cluster.raycluster import ACTOR_CONCURRENCY_MAX, ACTOR_RESTARTS_MAX, ACTOR_TASK_RETRIES_MAX
    from cluster.settings import ShardBounds
    from shards.store import PostgresShardStore

    config = ShardConfig(0, slots, dsn, ShardBounds.defaults(**bounds), store or PostgresShardStore,
                         idempotency=idempotency, isolation=isolation)
    handle = ray.remote(ShardActor).options(
        name=f"{name_prefix}-{uuid.uuid4().hex[:8]}", namespace=namespace, max_restarts=ACTOR_RESTARTS_MAX,
        max_task_retries=ACTOR_TASK_RETRIES_MAX, max_concurrency=ACTOR_CONCURRENCY_MAX, num_cpus=0,
    ).remote(config)
    ray.get(handle.start.remote(), timeout=START_TIMEOUT_S)
    return handle
