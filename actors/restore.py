"""Recovery: take the lease, load the shard's rows, rebuild the core, check it, then serve."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from actors.events import document_from_rows, layout_of, settings_of
from actors.inventory import InventoryLimits, ShardInventory, invariant
from actors.inventory.changes import IdempotencyRecorded
from actors.inventory.commands import USER_COMMAND_TYPES
from actors.inventory.recovery import load_event_columns
from actors.inventory.results import (
    EventStatusView,
    HoldItem,
    HoldView,
    OrderView,
    Rejection,
    TicketView,
    TransferView,
)
from actors.protocol import core_command
from shards.codec import ResultCodec

if TYPE_CHECKING:
    from actors.shard import EventShard, ShardConfig


def result_codec() -> ResultCodec:
    return ResultCodec(HoldView, HoldItem, OrderView, TicketView, TransferView, EventStatusView, Rejection)


@dataclass
class Restored:
    inventory: ShardInventory
    documents: dict[UUID, dict[str, Any]]
    epoch: int
    idempotency_complete: bool


async def restore_shard(pool: Any, config: ShardConfig, limits: InventoryLimits, holder: str,
                        timeout_s: float) -> Restored:
    import asyncio
    import time

    from shards.lease import take_lease
    from shards.loader import load_events, load_idempotency

    async def idempotency_keys() -> list[Any]:
        async with pool.acquire(timeout=timeout_s) as connection:
            return await load_idempotency(connection, limits.idempotency_retention_s, limits.idempotency_keys_max,
                                          timeout_s=timeout_s)

    # The lease first: only once it is taken can no older epoch commit, so the loads below (each
    # on its own connection, see shards.loader) see rows that cannot change any more.
    async with pool.acquire(timeout=timeout_s) as connection:
        epoch = await take_lease(connection, config.shard_id, holder)
    rows, keys = await asyncio.gather(load_events(pool, list(config.slots), timeout_s=timeout_s), idempotency_keys())
    inventory = ShardInventory(limits)
    documents = {}
    for event_id, event_rows in rows.items():
        documents[event_id] = adopt(inventory, event_id, event_rows)
    codec = result_codec()
    complete = len(keys) <= limits.idempotency_keys_max
    inventory.idempotency.load(
        (_recorded(record, codec) for record in keys[-limits.idempotency_keys_max:]), time.time())
    return Restored(inventory, documents, epoch, complete)


def adopt(inventory: ShardInventory, event_id: UUID, rows: Any) -> dict[str, Any]:
    """Rebuild one event from its rows into `inventory`; returns its API document."""
    # Blocked seats are stored as seat numbers but specified as labels: labels depend only on the
    # rows, so a first layout without blocks names them.
    bare = document_from_rows(rows.event, [{**s, "blocked_seat_nos": []} for s in rows.sections], None)
    unblocked = layout_of(bare)
    document = document_from_rows(rows.event, rows.sections, unblocked)
    layout = layout_of(document)
    for section in rows.sections:  # the loader names a ticket's section by its stored position
        invariant(layout.section_by_id[section["section_id"]].index == section["position"],
                  "event %s section %s is stored at position %s", event_id, section["section_id"], section["position"])
    event, live = load_event_columns(event_id, layout, settings_of(document), rows.holds, rows.orders, rows.tickets,
                                     rows.replacements)
    inventory.adopt_event(event, live)
    for section in inventory.availability(event_id) or ():
        stored = rows.pools.get(section.section_id)
        if stored is not None:
            invariant(stored == (section.held, section.sold),
                      "event %s pool %s: rows say held/sold %s, holds and tickets say %s", event_id,
                      section.section_id, stored, (section.held, section.sold))
    return document


def _recorded(record: Any, codec: ResultCodec) -> IdempotencyRecorded:
    return IdempotencyRecorded(record["user_id"], record["key"], bytes(record["fingerprint"]),
                               codec.decode(record["result"]), record["at_s"])


async def load_keys(shard: EventShard, requests: list[Any]) -> None:
    """Before applying: pull keys the hot cache no longer has (but Postgres does) back into it."""
    import time

    from shards.loader import lookup_idempotency

    now_s = time.time()
    cache = shard.inventory.idempotency
    commands = [core_command(request) for request in requests]
    missing = [(command.user_id, command.idempotency_key) for command in commands
               if isinstance(command, USER_COMMAND_TYPES) and command.idempotency_key is not None
               and cache.lookup(command.user_id, command.idempotency_key, now_s) is None]
    if not missing:
        return
    async with shard.pool.acquire() as connection:
        records = await lookup_idempotency(connection, missing)
    codec = result_codec()
    cache.load((_recorded(record, codec) for record in records), now_s)
