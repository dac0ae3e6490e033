"""The baselines' tables, the events they sell, and the check that none of them oversold.

Each baseline gets a database of its own on the benchmark's Postgres with four small tables:
``events``; ``pools`` (one GA pool per row, with the same belt-and-suspenders constraint as the
product's ``ga_pools``: ``CHECK (held + sold <= capacity)``); ``seats`` (one row per seat, its
status and the hold that has it, a partial index over the free ones so that "the best free
seats" is an index range scan); ``holds`` (one row per hold, GA quantity or seat numbers, with a
unique ``(user_id, idempotency_key)`` so that a retried request finds its first answer, as the
product's ``idempotency_keys`` table does).

The seated section is laid out as ``rows`` rows of ``seats_per_row`` seats; seat numbers run from
0 in row order, labels are ``<section>-<row>-<number>`` from 1 (API.md), and "best" means the
lowest seat number, which is also how the product's core picks when all seats cost the same.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from shards.migrate import with_database

GA_SECTION = "floor"
SEATED_SECTION = "A"
GA_PRICE_CENTS = 5000
SEAT_PRICE_CENTS = 7500
HOLD_SECONDS = 600
CONNECT_TIMEOUT_S = 30.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id uuid PRIMARY KEY,
    title text NOT NULL
);
CREATE TABLE IF NOT EXISTS pools (
    event_id uuid NOT NULL REFERENCES events (id),
    section text NOT NULL,
    capacity integer NOT NULL CHECK (capacity > 0),
    held integer NOT NULL DEFAULT 0 CHECK (held >= 0),
    sold integer NOT NULL DEFAULT 0 CHECK (sold >= 0),
    price_cents integer NOT NULL,
    PRIMARY KEY (event_id, section),
    CHECK (held + sold <= capacity)
);
CREATE TABLE IF NOT EXISTS seats (
    event_id uuid NOT NULL REFERENCES events (id),
    section text NOT NULL,
    seat_no integer NOT NULL,
    label text NOT NULL,
    price_cents integer NOT NULL,
    status text NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'held', 'sold')),
    hold_id uuid,
    PRIMARY KEY (event_id, section, seat_no)
);
CREATE INDEX IF NOT EXISTS seats_free ON seats (event_id, section, seat_no) WHERE status = 'available';
CREATE TABLE IF NOT EXISTS holds (
    id uuid PRIMARY KEY,
    event_id uuid NOT NULL REFERENCES events (id),
    section text NOT NULL,
    user_id text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    seat_nos integer[],
    status text NOT NULL DEFAULT 'held',
    expires_at timestamptz NOT NULL,
    total_cents integer NOT NULL,
    idempotency_key text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS holds_event ON holds (event_id, section);
"""


def seat_label(seat_no: int, seats_per_row: int, section: str = SEATED_SECTION) -> str:
    return f"{section}-{seat_no // seats_per_row + 1}-{seat_no % seats_per_row + 1}"


@dataclass(frozen=True)
class EventLayout:
    """What one benchmark run sells: a GA pool and a seated section, both on one event."""

    ga_capacity: int
    seat_rows: int
    seats_per_row: int

    @property
    def seat_count(self) -> int:
        return self.seat_rows * self.seats_per_row


async def create_database(base_dsn: str, name: str) -> str:
    """A fresh database `name` on the server of `base_dsn` with the baselines' tables; its DSN."""
    admin = await asyncpg.connect(with_database(base_dsn, "postgres"), timeout=CONNECT_TIMEOUT_S)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(base_dsn, name)
    connection = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        await connection.execute(SCHEMA)
    finally:
        await connection.close()
    return dsn


async def create_event(dsn: str, layout: EventLayout) -> uuid.UUID:
    """A new event with its GA pool and its seated section; its id."""
    event_id = uuid.uuid4()
    connection = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        async with connection.transaction():
            await connection.execute("INSERT INTO events (id, title) VALUES ($1, 'bench')", event_id)
            await connection.execute(
                "INSERT INTO pools (event_id, section, capacity, price_cents) VALUES ($1, $2, $3, $4)",
                event_id, GA_SECTION, layout.ga_capacity, GA_PRICE_CENTS)
            await connection.execute(
                """INSERT INTO seats (event_id, section, seat_no, label, price_cents)
                   SELECT $1, $2, n, $2 || '-' || (n / $3 + 1) || '-' || (n % $3 + 1), $4
                   FROM generate_series(0, $5 - 1) AS n""",
                event_id, SEATED_SECTION, layout.seats_per_row, SEAT_PRICE_CENTS, layout.seat_count)
        await connection.execute("ANALYZE seats")
    finally:
        await connection.close()
    return event_id


@dataclass
class RedisInventory:
    """What the Redis design's inventory says is left (it keeps no counters in Postgres)."""

    ga_remaining: int
    free_seats: set[int] = field(default_factory=set)


async def check_event(dsn: str, event_id: uuid.UUID, layout: EventLayout,
                      redis_inventory: RedisInventory | None = None) -> dict[str, Any]:
    """Count what the event's holds took and compare it with the inventory.

    ``oversold`` is the verdict the benchmark reports: more GA tickets held than the pool's
    capacity, or a seat in two holds. ``consistent`` says whether the inventory's own counters
    (Postgres' pool and seat rows, or Redis for the Redis design) agree with the holds: a lost
    update shows there first.
    """
    connection = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        pool = await connection.fetchrow("SELECT capacity, held, sold FROM pools WHERE event_id = $1 AND section = $2",
                                         event_id, GA_SECTION)
        ga_held = await connection.fetchval(
            "SELECT coalesce(sum(quantity), 0) FROM holds WHERE event_id = $1 AND section = $2", event_id, GA_SECTION)
        seat_lists = await connection.fetch("SELECT id, seat_nos FROM holds WHERE event_id = $1 AND section = $2",
                                            event_id, SEATED_SECTION)
        seat_rows = await connection.fetch(
            "SELECT seat_no, hold_id FROM seats WHERE event_id = $1 AND section = $2 AND status <> 'available'",
            event_id, SEATED_SECTION)
    finally:
        await connection.close()
    owners: dict[int, list[uuid.UUID]] = {}
    for row in seat_lists:
        for seat_no in row["seat_nos"] or ():
            owners.setdefault(seat_no, []).append(row["id"])
    doubly_held = sorted(seat for seat, holds in owners.items() if len(holds) > 1)
    out_of_range = [seat for seat in owners if not 0 <= seat < layout.seat_count]
    if redis_inventory is None:
        ga_consistent = int(pool["held"]) == int(ga_held)
        taken = {row["seat_no"]: row["hold_id"] for row in seat_rows}
        seats_consistent = taken == {seat: holds[0] for seat, holds in owners.items() if len(holds) == 1} \
            and not doubly_held
    else:
        ga_consistent = redis_inventory.ga_remaining + int(ga_held) == int(pool["capacity"])
        seats_consistent = (not set(owners) & redis_inventory.free_seats
                            and len(owners) + len(redis_inventory.free_seats) == layout.seat_count)
    return {
        "ga_capacity": int(pool["capacity"]), "ga_held": int(ga_held), "seats": layout.seat_count,
        "seats_held": len(owners), "seats_doubly_held": len(doubly_held), "seats_out_of_range": len(out_of_range),
        "oversold": int(ga_held) > int(pool["capacity"]) or bool(doubly_held) or bool(out_of_range),
        "consistent": bool(ga_consistent and seats_consistent),
    }
