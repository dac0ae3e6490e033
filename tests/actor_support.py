"""Shard actors of their own for tests: a fresh migrated database and an `ShardActor` in the
cluster's Ray, with the test-only switches (fencing, idempotency) that negative controls need."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from actors.inventory.commands import HoldGeneralAdmission
from actors.protocol import CreateEvent
from loadtest.isolated import create_database, drop_database, start_isolated_shard
from tests.harness import RunningCluster
from tests.support import fetch

TEST_NAMESPACE = "ticketing-tests"
# Databases this session created, dropped when it ends (the CI pass runs on a shared server).
CREATED_DATABASES: list[str] = []


def new_database(cluster: RunningCluster) -> str:
    """Create and migrate a database of its own on the cluster's Postgres; returns its DSN."""
    dsn = create_database(str(cluster.state()["pg_dsns"][0]), "test")  # type: ignore[index]
    CREATED_DATABASES.append(dsn)
    return dsn


def drop_created_databases() -> None:
    for dsn in CREATED_DATABASES:
        drop_database(dsn)
    CREATED_DATABASES.clear()


def start_shard(dsn: str, *, store: Any = None, idempotency: bool = True, isolation: bool = True,
                **bounds: Any) -> Any:
    """`store`: a wrapper from `shards.faults` for a negative control (None: the real one);
    `slots` among `bounds`: the slots it serves (default all)."""
    return start_isolated_shard(dsn, namespace=TEST_NAMESPACE, name_prefix="test-shard", store=store,
                                idempotency=idempotency, isolation=isolation, hold_expiry_tick_ms=100, **bounds)


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
