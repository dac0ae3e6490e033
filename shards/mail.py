"""The e-mail relay's reads and writes of each shard's database (``shards/sql/007_mail.sql``), and
the plan of which e-mails an outbox row causes.

The relay (`router.mail_relay`) works in two steps, each its own short transaction:

1. **Plan** (`MailQueries.plan_next`): read the outbox rows after ``mail_cursor`` in commit order
   (``outbox_id``), turn each ``order.confirmed`` and ``ticket.cancelled`` row into
   ``mail_deliveries`` rows with `plan_mail`, and move the cursor past them — in one transaction,
   so a relay that dies plans the same rows again or not at all. The holders' names and addresses
   are read from ``tickets``: the checkout records them in the same transaction as the order and
   its outbox row, so they are there when the row is.
2. **Send** (`MailQueries.due`, `record`): each pending delivery whose ``next_attempt_at`` has come,
   then its outcome.

The cursor is exact because one writer per shard commits its batches one after another: rows of a
shard become visible in ``outbox_id`` order (``shards/outbox.py``). The webhook relay's
``published_at`` is neither read nor written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from shards.pools import OneReaderPerShard

MAIL_TOPICS = ("order.confirmed", "ticket.cancelled")

# One e-mail relay per shard at a time: it holds this session-level advisory lock (plus the shard
# id) for its round, as the webhook relay holds its own (a different key: the two run side by side).
MAIL_LOCK_KEY = 0x6D61696C0000


@dataclass(frozen=True, slots=True)
class Holder:
    """Whom a ticket is for, as the checkout recorded it (both None: the checkout named nobody)."""

    name: str | None
    email: str | None


@dataclass(frozen=True, slots=True)
class PlannedMail:
    """One ``mail_deliveries`` row as planned: `recipient` '' for tickets nobody can be mailed."""

    outbox_id: int
    recipient: str
    topic: str
    event_id: UUID
    order_id: UUID | None
    holder_name: str | None
    ticket_ids: tuple[UUID, ...]
    outbox_created_at: datetime

    @property
    def skipped(self) -> bool:
        return self.recipient == ""


@dataclass(frozen=True, slots=True)
class MailDelivery:
    """A pending delivery with what its message needs: the event's title and start."""

    outbox_id: int
    recipient: str
    topic: str
    event_id: UUID
    order_id: UUID | None
    holder_name: str | None
    ticket_ids: tuple[UUID, ...]
    attempts: int
    event_title: str
    event_starts_at: datetime


def _ticket_ids(topic: str, payload: dict[str, Any]) -> list[UUID]:
    if topic == "order.confirmed":
        return [UUID(ticket_id) for ticket_id in payload.get("ticket_ids", ())]
    return [UUID(payload["ticket_id"])]


def plan_mail(outbox_id: int, topic: str, event_id: UUID, payload: dict[str, Any], created_at: datetime,
              holders: dict[UUID, Holder]) -> list[PlannedMail]:
    """The e-mails one outbox row causes: one per holder address, with that address's tickets in the
    order the row lists them (its first holder's name greets), and one skipped row for the tickets
    without an address (the buyer is only a user id: we know no address of theirs)."""
    order_id = UUID(payload["order_id"]) if topic == "order.confirmed" else None
    by_address: dict[str, tuple[str | None, list[UUID]]] = {}
    nobody: list[UUID] = []
    for ticket_id in _ticket_ids(topic, payload):
        holder = holders.get(ticket_id)
        if holder is None or not holder.email:
            nobody.append(ticket_id)
            continue
        by_address.setdefault(holder.email, (holder.name, []))[1].append(ticket_id)
    planned = [PlannedMail(outbox_id, address, topic, event_id, order_id, name, tuple(tickets), created_at)
               for address, (name, tickets) in by_address.items()]
    if nobody:
        planned.append(PlannedMail(outbox_id, "", topic, event_id, order_id, None, tuple(nobody), created_at))
    return planned


_PLANNED_COLUMNS = ("outbox_id", "recipient", "topic", "event_id", "order_id", "holder_name", "ticket_ids",
                    "status", "outbox_created_at")


class MailQueries(OneReaderPerShard):
    """The e-mail relay's SQL on each shard's database (module docstring)."""

    lock_key = MAIL_LOCK_KEY

    @staticmethod
    async def plan_next(connection: Any, rows_max: int) -> list[PlannedMail]:
        """Plan the deliveries of the next `rows_max` outbox rows and move the cursor past them."""
        async with connection.transaction():
            cursor = await connection.fetchval("SELECT outbox_id FROM mail_cursor FOR UPDATE")
            rows = await connection.fetch(
                """SELECT outbox_id, event_id, topic, payload::text AS payload, created_at FROM outbox
                   WHERE outbox_id > $1 AND NOT mail_planned ORDER BY outbox_id LIMIT $2""", cursor, rows_max)
            if not rows:
                return []
            # As text, then parsed here: the router's pools leave json columns to asyncpg's text codec.
            mailed = [(row, orjson.loads(row["payload"])) for row in rows if row["topic"] in MAIL_TOPICS]
            wanted = [ticket_id for row, payload in mailed for ticket_id in _ticket_ids(row["topic"], payload)]
            holders = {row["ticket_id"]: Holder(row["holder_name"], row["holder_email"]) for row in
                       await connection.fetch("""SELECT ticket_id, holder_name, holder_email FROM tickets
                                                 WHERE ticket_id = ANY ($1::uuid[])""", wanted)} if wanted else {}
            planned = [mail for row, payload in mailed
                       for mail in plan_mail(row["outbox_id"], row["topic"], row["event_id"], payload,
                                             row["created_at"], holders)]
            if planned:
                await connection.executemany(
                    """INSERT INTO mail_deliveries (outbox_id, recipient, topic, event_id, order_id, holder_name,
                                                    ticket_ids, status, outbox_created_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (outbox_id, recipient) DO NOTHING""",
                    [(mail.outbox_id, mail.recipient, mail.topic, mail.event_id, mail.order_id, mail.holder_name,
                      list(mail.ticket_ids), "skipped" if mail.skipped else "pending", mail.outbox_created_at)
                     for mail in planned])
            await connection.execute("UPDATE mail_cursor SET outbox_id = $1, updated_at = now()",
                                     rows[-1]["outbox_id"])
        return planned

    @staticmethod
    async def due(connection: Any, rows_max: int) -> list[MailDelivery]:
        """The pending deliveries whose next attempt has come, oldest outbox row first."""
        rows = await connection.fetch(
            """SELECT d.outbox_id, d.recipient, d.topic, d.event_id, d.order_id, d.holder_name, d.ticket_ids,
                      d.attempts, e.title, e.starts_at
               FROM mail_deliveries d JOIN events e ON e.event_id = d.event_id
               WHERE d.status = 'pending' AND d.next_attempt_at <= now()
               ORDER BY d.outbox_id, d.recipient LIMIT $1""", rows_max)
        return [MailDelivery(row["outbox_id"], row["recipient"], row["topic"], row["event_id"], row["order_id"],
                             row["holder_name"], tuple(row["ticket_ids"]), row["attempts"], row["title"],
                             row["starts_at"]) for row in rows]

    @staticmethod
    async def record(connection: Any, delivery: MailDelivery, status: str, error: str | None,
                     next_attempt_at: datetime | None) -> None:
        """One attempt's outcome: sent, pending again (at `next_attempt_at`) or dead."""
        await connection.execute(
            """UPDATE mail_deliveries
               SET status = $3, attempts = attempts + 1, error = $4,
                   next_attempt_at = coalesce($5, next_attempt_at),
                   sent_at = CASE WHEN $3 = 'sent' THEN now() END
               WHERE outbox_id = $1 AND recipient = $2 AND status = 'pending'""",
            delivery.outbox_id, delivery.recipient, status, error, next_attempt_at)

    async def lag_s(self, shard_id: int) -> float:
        """Seconds since the oldest outbox row that still owes an e-mail was written (0 when none):
        a pending delivery's, or the oldest mail row not planned yet."""
        pool = await self._pool_of(shard_id)
        age = await pool.fetchval(
            """SELECT extract(epoch FROM now() - least(
                   (SELECT min(outbox_created_at) FROM mail_deliveries WHERE status = 'pending'),
                   (SELECT created_at FROM outbox
                    WHERE outbox_id > (SELECT outbox_id FROM mail_cursor) AND topic = ANY ($1::text[])
                      AND NOT mail_planned
                    ORDER BY outbox_id LIMIT 1)))""", list(MAIL_TOPICS))
        return 0.0 if age is None else max(0.0, float(age))
