"""Webhook registrations and their delivery log: the SQL (``shards/sql/006_webhooks.sql``).

Registrations live in shard 0's database (`REGISTRY_SHARD`): they belong to an organizer, who has
no shard of its own, and every shard's relay reads them from one place. The weakness: shard 0 down
means no registration can be made or read, and no delivery made, for any shard (the outbox keeps
the events meanwhile, so nothing is lost). Deleting a registration marks it (``deleted_at``): its
delivery log stays readable to nobody but the database, and its secret is never shown again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from shards.pools import OneReaderPerShard, PoolOf

REGISTRY_SHARD = 0


@dataclass(frozen=True, slots=True)
class Webhook:
    webhook_id: UUID
    organizer_id: str
    url: str
    topics: tuple[str, ...]
    secret: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: int
    message_id: str
    event_id: UUID
    topic: str
    attempt: int
    result: str
    status_code: int | None
    error: str | None
    attempted_at: datetime
    next_attempt_at: datetime | None


def _webhook(row: Any) -> Webhook:
    return Webhook(row["webhook_id"], row["organizer_id"], row["url"], tuple(row["topics"]), row["secret"],
                   row["created_at"])


class WebhookRegistry:
    """Registrations of organizers, on `REGISTRY_SHARD`'s database."""

    def __init__(self, pool_of: PoolOf) -> None:
        self._pool_of = pool_of

    async def register(self, webhook_id: UUID, organizer_id: str, url: str, topics: list[str],
                       secret: str) -> Webhook:
        pool = await self._pool_of(REGISTRY_SHARD)
        row = await pool.fetchrow(
            """INSERT INTO webhooks (webhook_id, organizer_id, url, topics, secret) VALUES ($1, $2, $3, $4, $5)
               RETURNING *""", webhook_id, organizer_id, url, topics, secret)
        return _webhook(row)

    async def of_organizer(self, organizer_id: str, limit: int) -> list[Webhook]:
        pool = await self._pool_of(REGISTRY_SHARD)
        rows = await pool.fetch(
            """SELECT * FROM webhooks WHERE organizer_id = $1 AND deleted_at IS NULL
               ORDER BY created_at, webhook_id LIMIT $2""", organizer_id, limit)
        return [_webhook(row) for row in rows]

    async def owned(self, webhook_id: UUID, organizer_id: str) -> Webhook | None:
        """The live registration, if `organizer_id` owns it (None for anyone else's, as for none)."""
        pool = await self._pool_of(REGISTRY_SHARD)
        row = await pool.fetchrow(
            "SELECT * FROM webhooks WHERE webhook_id = $1 AND organizer_id = $2 AND deleted_at IS NULL",
            webhook_id, organizer_id)
        return None if row is None else _webhook(row)

    async def delete(self, webhook_id: UUID, organizer_id: str) -> Webhook | None:
        pool = await self._pool_of(REGISTRY_SHARD)
        row = await pool.fetchrow(
            """UPDATE webhooks SET deleted_at = now()
               WHERE webhook_id = $1 AND organizer_id = $2 AND deleted_at IS NULL RETURNING *""",
            webhook_id, organizer_id)
        return None if row is None else _webhook(row)

    async def deliveries(self, webhook_id: UUID, limit: int) -> list[Delivery]:
        """The newest attempts first."""
        pool = await self._pool_of(REGISTRY_SHARD)
        rows = await pool.fetch(
            """SELECT delivery_id, message_id, event_id, topic, attempt, result, status_code, error, attempted_at,
                      next_attempt_at
               FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY delivery_id DESC LIMIT $2""",
            webhook_id, limit)
        return [Delivery(*row) for row in rows]

    async def subscribed(self, organizer_id: str, topic: str) -> list[Webhook]:
        """The live registrations of `organizer_id` that asked for `topic`."""
        pool = await self._pool_of(REGISTRY_SHARD)
        rows = await pool.fetch(
            """SELECT * FROM webhooks WHERE organizer_id = $1 AND $2 = ANY (topics) AND deleted_at IS NULL
               ORDER BY webhook_id""", organizer_id, topic)
        return [_webhook(row) for row in rows]

    async def last_attempts(self, shard_id: int, outbox_id: int) -> dict[UUID, tuple[int, str, datetime | None]]:
        """Per webhook, the last attempt at one outbox row: (attempt, result, next_attempt_at)."""
        pool = await self._pool_of(REGISTRY_SHARD)
        rows = await pool.fetch(
            """SELECT DISTINCT ON (webhook_id) webhook_id, attempt, result, next_attempt_at
               FROM webhook_deliveries WHERE shard_id = $1 AND outbox_id = $2
               ORDER BY webhook_id, attempt DESC""", shard_id, outbox_id)
        return {row["webhook_id"]: (row["attempt"], row["result"], row["next_attempt_at"]) for row in rows}

    async def record_attempt(self, webhook_id: UUID, shard_id: int, outbox_id: int, message_id: str,
                             event_id: UUID, topic: str, attempt: int, result: str, status_code: int | None,
                             error: str | None, next_attempt_at: datetime | None) -> None:
        pool = await self._pool_of(REGISTRY_SHARD)
        await pool.execute(
            """INSERT INTO webhook_deliveries (webhook_id, shard_id, outbox_id, message_id, event_id, topic, attempt,
                                               result, status_code, error, attempted_at, next_attempt_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now(), $11)
               ON CONFLICT (webhook_id, shard_id, outbox_id, attempt) DO NOTHING""",
            webhook_id, shard_id, outbox_id, message_id, event_id, topic, attempt, result, status_code, error,
            next_attempt_at)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    outbox_id: int
    event_id: UUID
    organizer_id: str
    topic: str
    payload: dict[str, Any]
    created_at: datetime


# Only one relay works on a shard's outbox at a time, whichever router process it runs in: it
# holds this session-level advisory lock (plus the shard id) on the shard's database for its round.
# One reader per shard is what keeps deliveries in order per event without row locks, and it
# costs nothing when idle; the weakness is that one shard's deliveries go no faster than one relay.
RELAY_LOCK_KEY = 0x77686F6F6B00


class OutboxRelayQueries(OneReaderPerShard):
    """The relay's reads and writes of each shard's ``outbox`` (module docstring)."""

    lock_key = RELAY_LOCK_KEY

    @staticmethod
    async def unpublished(connection: Any, rows_max: int) -> list[OutboxRow]:
        """The oldest unpublished rows, in commit order, with their event's organizer."""
        rows = await connection.fetch(
            """SELECT o.outbox_id, o.event_id, e.organizer_id, o.topic, o.payload::text AS payload, o.created_at
               FROM outbox o JOIN events e ON e.event_id = o.event_id
               WHERE o.published_at IS NULL ORDER BY o.outbox_id LIMIT $1""", rows_max)
        # As text, then parsed here: the router's pools leave json columns to asyncpg's text codec.
        return [OutboxRow(row["outbox_id"], row["event_id"], row["organizer_id"], row["topic"],
                          orjson.loads(row["payload"]), row["created_at"]) for row in rows]

    @staticmethod
    async def mark_published(connection: Any, outbox_ids: list[int]) -> None:
        await connection.execute(
            "UPDATE outbox SET published_at = now() WHERE outbox_id = ANY ($1::bigint[]) AND published_at IS NULL",
            outbox_ids)

    async def oldest_unpublished_age_s(self, shard_id: int) -> float:
        """Seconds since the oldest unpublished row was written (0 when none waits): the outbox lag."""
        pool = await self._pool_of(shard_id)
        age = await pool.fetchval(
            """SELECT extract(epoch FROM now() - created_at) FROM outbox WHERE published_at IS NULL
               ORDER BY outbox_id LIMIT 1""")
        return 0.0 if age is None else max(0.0, float(age))
