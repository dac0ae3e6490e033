"""Slot ownership in the shard databases, and the database half of moving slots (DESIGN §4).

Each shard database records, in ``slot_owners`` (shards/sql/009_slot_owners.sql), which slots it
serves. A move of slots S from shard A to shard B takes four steps, each durable before the next
begins, so that a crash anywhere leaves at most one owner and a re-run finishes the move
(`cluster/slot_move.py` drives them):

1. **fence** (A's actor, `actors.actor.ShardActor.fence_slots`): A stops applying commands on S,
   waits for its queued commits, marks S 'fenced' in A's database and forgets S's events. From
   here nobody serves S: routers get `SlotMoved` and retry.
2. **copy** (`copy_to_target`): in one transaction on B, every row of S's events (events, sections,
   pools, holds, seat claims, orders, tickets, check-ins, payments, audit trail) and the
   idempotency keys of S are written, and S is marked 'owned' with the new map version. What is
   read from A cannot change under the copy: A is fenced.
3. **clear** (`clear_source`): A hands B what its relays still owe for S's events (outbox rows not
   yet published or not yet planned for e-mail, pending e-mail deliveries: A's relays join them
   with event rows that are about to go), then deletes S's rows and marks S 'moved', in one
   transaction.
4. **adopt** (B's actor, `adopt_slots`): B loads S's events and serves them.

A move is at least once for side effects: a crash between step 3's write to B and its commit on A
hands the same rows over again on the re-run, so a webhook or an e-mail may go twice, never zero
times. Outbox rows A had already delivered go with the events; A's webhook delivery log keeps its
record of them.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

OWNED, FENCED, MOVED = "owned", "fenced", "moved"

# Tables whose rows belong to one event, parents before children: copied in this order, deleted in
# the reverse one. `audit_id` is generated: the target numbers the copied rows anew, in the source's
# order (the audit read path pages by it).
EVENT_TABLES = ("events", "sections", "ga_pools", "holds", "seat_claims", "orders", "tickets", "checkins",
                "payments", "audit_log")
_ORDER_BY = {"audit_log": " ORDER BY audit_id"}


@dataclass(frozen=True, slots=True)
class SlotRow:
    slot: int
    state: str
    version: int


async def seed_and_read(connection: asyncpg.Connection, configured: Iterable[int]) -> list[SlotRow]:
    """Mark the slots the settings give this shard 'owned' where no row exists yet (a first start;
    a move's rows are never overwritten), then return every row of this database."""
    async with connection.transaction():
        await connection.execute(
            """INSERT INTO slot_owners (slot, state, version)
               SELECT s, 'owned', 1 FROM unnest($1::smallint[]) AS s
               ON CONFLICT (slot) DO NOTHING""", sorted(configured))
        return await read_rows(connection)


async def read_rows(connection: asyncpg.Connection | asyncpg.Pool) -> list[SlotRow]:
    rows = await connection.fetch("SELECT slot, state, version FROM slot_owners ORDER BY slot")
    return [SlotRow(int(row["slot"]), str(row["state"]), int(row["version"])) for row in rows]


def owners_of(rows_by_shard: dict[int, list[SlotRow]]) -> tuple[dict[int, int], int]:
    """Slot → the shard whose database marks it 'owned', and the map version (the highest row
    version anywhere; 1 before any move)."""
    owners = {row.slot: shard_id for shard_id, rows in rows_by_shard.items() for row in rows if row.state == OWNED}
    version = max((row.version for rows in rows_by_shard.values() for row in rows), default=1)
    return owners, version


async def fence(connection: asyncpg.Connection, slots: list[int], version: int) -> int:
    """Step 1's durable half: `slots` (owned here) become 'fenced'. Returns how many changed."""
    status = await connection.execute(
        """UPDATE slot_owners SET state = 'fenced', version = $2, updated_at = now()
           WHERE slot = ANY($1::smallint[]) AND state = 'owned'""", slots, version)
    return int(status.split()[-1])


async def _columns(connection: asyncpg.Connection, table: str) -> list[str]:
    """The columns a copy writes: all but generated ones (the search vector, identities)."""
    rows = await connection.fetch(
        """SELECT column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = $1
             AND is_generated = 'NEVER' AND coalesce(identity_generation, '') <> 'ALWAYS'
           ORDER BY ordinal_position""", table)
    return [str(row["column_name"]) for row in rows]


async def copy_to_target(source: asyncpg.Connection, target: asyncpg.Connection, slots: list[int],
                         version: int) -> dict[str, int]:
    """Step 2: copy the rows of `slots` from the (fenced) source database to the target and mark
    them 'owned' there, in one target transaction. Rows the target already holds for those events
    (none, unless an operator copied by hand) are replaced. Returns rows copied per table."""
    event_ids = [row["event_id"] for row in await source.fetch(
        "SELECT event_id FROM events WHERE slot = ANY($1::smallint[])", slots)]
    copied: dict[str, int] = {}
    async with target.transaction():
        await target.execute("SELECT set_config('ticketing.slot_move', 'on', true)")
        await _delete_events(target, event_ids)
        for table in EVENT_TABLES:
            columns = await _columns(source, table)
            buffer = io.BytesIO()
            names = ", ".join(columns)
            await source.copy_from_query(
                f"SELECT {names} FROM {table} WHERE event_id = ANY($1::uuid[]){_ORDER_BY.get(table, '')}",
                event_ids, output=buffer, format="binary")
            buffer.seek(0)
            status = await target.copy_to_table(table, source=buffer, columns=columns, format="binary")
            copied[table] = int(status.split()[-1])
        copied["idempotency_keys"] = await _copy_keys(source, target, slots)
        await target.execute(
            """INSERT INTO slot_owners (slot, state, version) SELECT s, 'owned', $2 FROM unnest($1::smallint[]) AS s
               ON CONFLICT (slot) DO UPDATE SET state = 'owned', version = $2, updated_at = now()""",
            slots, version)
    return copied


async def _copy_keys(source: asyncpg.Connection, target: asyncpg.Connection, slots: list[int]) -> int:
    """The idempotency keys of `slots`, and those whose slot is unknown (written before slots were
    recorded): a key that is not this slot's only ever makes the target refuse a reuse of it, which
    is what it must answer anyway. A key the target already has is kept."""
    columns = ["user_id", "key", "fingerprint", "result", "created_at", "slot"]
    names = ", ".join(columns)
    buffer = io.BytesIO()
    await source.copy_from_query(
        f"SELECT {names} FROM idempotency_keys WHERE slot = ANY($1::smallint[]) OR slot IS NULL",
        slots, output=buffer, format="binary")
    buffer.seek(0)
    await target.execute("CREATE TEMPORARY TABLE moved_keys (LIKE idempotency_keys) ON COMMIT DROP")
    await target.copy_to_table("moved_keys", source=buffer, columns=columns, format="binary")
    status = await target.execute(
        f"INSERT INTO idempotency_keys ({names}) SELECT {names} FROM moved_keys ON CONFLICT DO NOTHING")
    return int(status.split()[-1])


async def clear_source(source: asyncpg.Connection, target: asyncpg.Connection, slots: list[int],
                       version: int) -> dict[str, int]:
    """Step 3: the source hands over what its relays still owe for the moved events and forgets
    their rows. In one source transaction that holds the mail cursor (the source's mail relay cannot
    plan meanwhile): the outbox rows not yet published or not yet planned for e-mail, and the
    pending e-mail deliveries, are written to the target (committed first, under new outbox ids, in
    order); then the rows of the moved events are deleted and the slots marked 'moved'. A crash
    between the two commits re-sends those rows on the re-run: deliveries are at least once, never
    lost. Returns what it moved and deleted."""
    async with source.transaction():
        await source.execute("SELECT set_config('ticketing.slot_move', 'on', true)")
        cursor = int(await source.fetchval("SELECT outbox_id FROM mail_cursor FOR UPDATE") or 0)
        event_ids = [row["event_id"] for row in await source.fetch(
            "SELECT event_id FROM events WHERE slot = ANY($1::smallint[])", slots)]
        handed = await _hand_over_outbox(source, target, event_ids, cursor)
        await _delete_events(source, event_ids)
        await source.execute("DELETE FROM outbox WHERE event_id = ANY($1::uuid[])", event_ids)
        await source.execute("DELETE FROM mail_deliveries WHERE event_id = ANY($1::uuid[]) AND status = 'pending'",
                             event_ids)
        await source.execute("DELETE FROM idempotency_keys WHERE slot = ANY($1::smallint[])", slots)
        await source.execute(
            """UPDATE slot_owners SET state = 'moved', version = $2, updated_at = now()
               WHERE slot = ANY($1::smallint[]) AND state = 'fenced'""", slots, version)
    return {"events_deleted": len(event_ids), **handed}


async def _hand_over_outbox(source: asyncpg.Connection, target: asyncpg.Connection, event_ids: list[Any],
                            cursor: int) -> dict[str, int]:
    rows = await source.fetch(
        """SELECT outbox_id, event_id, topic, payload::text AS payload, created_at, published_at, mail_planned
           FROM outbox o WHERE event_id = ANY($1::uuid[])
             AND (published_at IS NULL OR (outbox_id > $2 AND NOT mail_planned)
                  OR EXISTS (SELECT 1 FROM mail_deliveries d WHERE d.outbox_id = o.outbox_id AND d.status = 'pending'))
           ORDER BY outbox_id""", event_ids, cursor)
    deliveries = await source.fetch(
        """SELECT outbox_id, recipient, topic, event_id, order_id, holder_name, ticket_ids, attempts, error,
                  outbox_created_at FROM mail_deliveries
           WHERE event_id = ANY($1::uuid[]) AND status = 'pending' ORDER BY outbox_id, recipient""", event_ids)
    new_ids: dict[int, int] = {}
    async with target.transaction():
        for row in rows:
            new_ids[row["outbox_id"]] = await target.fetchval(
                """INSERT INTO outbox (event_id, topic, payload, created_at, published_at, mail_planned)
                   VALUES ($1, $2, $3::jsonb, $4, $5, $6) RETURNING outbox_id""",
                row["event_id"], row["topic"], row["payload"], row["created_at"], row["published_at"],
                row["mail_planned"] or row["outbox_id"] <= cursor)
        await target.executemany(
            """INSERT INTO mail_deliveries (outbox_id, recipient, topic, event_id, order_id, holder_name, ticket_ids,
                                            status, attempts, error, outbox_created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10) ON CONFLICT DO NOTHING""",
            [(new_ids[d["outbox_id"]], d["recipient"], d["topic"], d["event_id"], d["order_id"], d["holder_name"],
              d["ticket_ids"], d["attempts"], d["error"], d["outbox_created_at"]) for d in deliveries])
    return {"outbox_handed_over": len(rows), "mail_handed_over": len(deliveries)}


async def _delete_events(connection: asyncpg.Connection, event_ids: list[Any]) -> None:
    for table in reversed(EVENT_TABLES):
        await connection.execute(f"DELETE FROM {table} WHERE event_id = ANY($1::uuid[])", event_ids)
