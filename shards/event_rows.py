"""Event rows: written once at creation (through the actor's fenced writer) and read at recovery."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

EVENT_COLUMNS = ("event_id", "slot", "organizer_id", "title", "category", "description", "venue", "starts_at",
                 "ends_at", "currency", "hold_seconds", "per_person_limit", "queue", "sale_windows", "status",
                 "seat_count", "created_at")
SECTION_COLUMNS = ("event_id", "section_id", "position", "name", "kind", "capacity", "price_cents",
                   "first_seat_no", "rows", "blocked_seat_nos", "pricing_mode", "floor_cents", "ceiling_cents")

JSONB_BINARY_VERSION = b"\x01"


async def configure_json(connection: asyncpg.Connection) -> None:
    """json/jsonb columns as Python values via orjson (pool `init` hook).

    Binary format, because the writer COPYs rows and COPY speaks binary; jsonb's binary form is a
    version byte followed by the JSON text.
    """
    await connection.set_type_codec(
        "jsonb", schema="pg_catalog", format="binary",
        encoder=lambda value: JSONB_BINARY_VERSION + orjson.dumps(value),
        decoder=lambda data: orjson.loads(data[1:]))
    await connection.set_type_codec(
        "json", schema="pg_catalog", format="binary", encoder=orjson.dumps, decoder=orjson.loads)


def _values(row: dict[str, Any], columns: tuple[str, ...]) -> list[Any]:
    return [row[column] for column in columns]


async def insert_event(connection: asyncpg.Connection, event: dict[str, Any], sections: list[dict[str, Any]]) -> None:
    placeholders = ", ".join(f"${index}" for index in range(1, len(EVENT_COLUMNS) + 1))
    await connection.execute(
        f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({placeholders})", *_values(event, EVENT_COLUMNS))
    placeholders = ", ".join(f"${index}" for index in range(1, len(SECTION_COLUMNS) + 1))
    await connection.executemany(
        f"INSERT INTO sections ({', '.join(SECTION_COLUMNS)}) VALUES ({placeholders})",
        [_values(section, SECTION_COLUMNS) for section in sections])
    pools = [(s["event_id"], s["section_id"], s["capacity"]) for s in sections if s["kind"] == "ga"]
    if pools:
        await connection.executemany(
            "INSERT INTO ga_pools (event_id, section_id, capacity) VALUES ($1, $2, $3)", pools)


async def update_event(connection: asyncpg.Connection, event_id: Any, fields: dict[str, Any]) -> None:
    allowed = {"status", "queue", "sale_windows"}
    names = [name for name in fields if name in allowed]
    if not names:
        return
    assignments = ", ".join(f"{name} = ${index}" for index, name in enumerate(names, start=2))
    await connection.execute(
        f"UPDATE events SET {assignments}, updated_at = now() WHERE event_id = $1",
        event_id, *(fields[name] for name in names))
