"""Shard actors of their own for tests: a fresh migrated database and an `EventShard` in the
cluster's Ray, with the test-only switches (fencing, idempotency) that negative controls need."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from actors.inventory.commands import HoldGeneralAdmission
from actors.protocol import CreateEvent
from shards.migrate import apply_migrations, with_database
from tests.harness import RunningCluster
from tests.support import fetch

TEST_NAMESPACE = "ticketing-tests"
ALL_SLOTS = tuple(range(256))
# Databases this session created, dropped when it ends (the CI pass runs on a shared server).
CREATED_DATABASES: list[str] = []


def new_database(cluster: RunningCluster) -> str:
    """Create and migrate a database of its own on the cluster's Postgres; returns its DSN."""
    base = str(cluster.state()["pg_dsns"][0])  # type: ignore[index]
    name = f"test_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        admin = await asyncpg.connect(with_database(base, "postgres"))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        await apply_migrations(with_database(base, name), timeout_s=60)

    asyncio.run(create())
    CREATED_DATABASES.append(with_database(base, name))
    return with_database(base, name)


def drop_created_databases() -> None:
    async def drop() -> None:
        for dsn in CREATED_DATABASES:
            name = dsn.rsplit("/", 1)[1]
            admin = await asyncpg.connect(with_database(dsn, "postgres"))
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()

    asyncio.run(drop())
    CREATED_DATABASES.clear()


def start_shard(dsn: str, *, name: str | None = None, fencing: bool = True, idempotency: bool = True,
                **bounds: Any) -> Any:
    import ray

    from actors.shard import EventShard, ShardConfig

    config = ShardConfig(0, ALL_SLOTS, dsn, {"hold_expiry_tick_ms": 100, **bounds}, fencing=fencing,
                         idempotency=idempotency)
    handle = ray.remote(EventShard).options(
        name=name or f"test-shard-{uuid.uuid4().hex[:8]}", namespace=TEST_NAMESPACE, max_restarts=-1,
        max_task_retries=0, max_concurrency=64, num_cpus=0,
    ).remote(config)
    ray.get(handle.start.remote(), timeout=120)
    return handle


def ga_event_command(capacity: int, *, seated_rows: list[int] | None = None, hold_seconds: int = 600,
                     per_person_limit: int | None = None) -> CreateEvent:
    sections: list[dict[str, Any]] = [{"id": "floor", "name": "Floor", "kind": "ga", "capacity": capacity,
                                       "price_cents": 5000}]
    if seated_rows:
        sections.append({"id": "A", "name": "A", "kind": "seated", "price_cents": 8000,
                         "rows": [{"label": str(i + 1), "seats": n} for i, n in enumerate(seated_rows)]})
    document = {"title": "t", "category": "", "description": "", "venue": {"name": "v"},
                "starts_at": "2027-01-01T20:00:00Z", "ends_at": None, "currency": "EUR",
                "hold_seconds": hold_seconds, "per_person_limit": per_person_limit,
                "queue": {"enabled": False}, "sale_windows": [], "sections": sections}
    return CreateEvent(uuid.uuid4(), "organizer", document)


def ga_hold(event_id: uuid.UUID, user: str, quantity: int = 1, key: str | None = None) -> HoldGeneralAdmission:
    return HoldGeneralAdmission(event_id, user, uuid.uuid4(), "floor", quantity, None, key)



def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    return asyncio.run(fetch(dsn, sql, *args))


def assert_pool_consistent(dsn: str, event_id: uuid.UUID) -> tuple[int, int]:
    """The pool's counters equal its live holds and live tickets; returns (held, sold)."""
    (pool,) = query(dsn, "SELECT capacity, held, sold FROM ga_pools WHERE event_id = $1", event_id)
    (held,) = query(dsn, """SELECT coalesce(sum(quantity), 0) AS n FROM holds WHERE event_id = $1 AND kind = 'ga'
                            AND status IN ('held', 'payment_pending')""", event_id)
    (sold,) = query(dsn, """SELECT count(*) AS n FROM tickets WHERE event_id = $1 AND seat_no IS NULL
                            AND status IN ('valid', 'checked_in')""", event_id)
    assert (pool["held"], pool["sold"]) == (held["n"], sold["n"]), (dict(pool), held["n"], sold["n"])
    assert pool["held"] + pool["sold"] <= pool["capacity"]
    return int(pool["held"]), int(pool["sold"])
