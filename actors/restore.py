"""Recovery: take the lease, load the shard's rows (through its `ShardStore`), rebuild the core,
check it, then serve; and, before a batch, the idempotency keys memory may lack."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from uuid import UUID

from actors.catalog import Catalog, EventBody, ShardState
from actors.event_bodies import document_from_rows, layout_of, settings_of
from actors.inventory import InventoryLimits, ShardInventory, invariant
from actors.inventory.commands import USER_COMMAND_TYPES
from actors.inventory.idempotency import IdempotencyCache
from actors.inventory.recovery import load_event_columns
from actors.protocol import core_command

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from shards.lookup import DurableLookup
    from shards.store import ShardStore


async def restore_shard(store: ShardStore, shard_id: int, slots: list[int], limits: InventoryLimits,
                        holder: str) -> ShardState:
    """The shard's state rebuilt from its rows. An event whose rows do not rebuild into a
    consistent state (an invariant broke, or the rows could not be read) is left out and listed in
    `quarantined` with what was wrong: the shard serves its other events and answers every call on
    it as unavailable until an operator repairs the rows and it recovers again."""
    # The lease first: only once it is taken can no older epoch commit, so what `load` reads
    # cannot change any more.
    epoch = await store.take_lease(holder)
    loaded = await store.load(slots, limits.idempotency_keys_max)
    inventory = ShardInventory(limits)
    documents: dict[UUID, EventBody] = {}
    quarantined: dict[UUID, str] = {}
    for event_id, event_rows in loaded.events.items():
        try:
            documents[event_id] = adopt(inventory, event_id, event_rows)
        except Exception as error:  # one event's bad rows must not keep the shard's others down
            inventory.forget_event(event_id)
            quarantined[event_id] = f"{type(error).__name__}: {error}"
            log.critical("shard %s: event %s refused at recovery, its rows are inconsistent: %s", shard_id,
                         event_id, quarantined[event_id])
    if loaded.keys_cut_s is not None:  # the newest key left out, and every older one
        inventory.idempotency.mark_dropped(loaded.keys_cut_s)
    inventory.idempotency.load(loaded.keys)
    return ShardState(inventory, Catalog(documents), epoch, quarantined)


def adopt(inventory: ShardInventory, event_id: UUID, rows: Any) -> EventBody:
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


async def load_keys(cache: IdempotencyCache, requests: list[Any], lookup: DurableLookup | None
                    ) -> tuple[int, int]:
    """Before applying a batch: make sure memory knows every key of it that Postgres knows.

    Returns (keys looked up in Postgres, keys found there); raises `shards.lookup.LookupFailed`
    when Postgres cannot answer, and then the batch must not be applied (a key it does not know
    could be a replay). Nothing to do while the cache is complete (idempotency.py) and the batch
    cannot push any key out of it; otherwise the batch's keys are protected from eviction and, if
    the cache is incomplete, its misses are read from Postgres. `lookup` None is the negative
    control's actor, which trusts memory alone (the behaviour before issue 10).
    """
    if cache.complete and len(cache) + len(requests) <= cache.keys_max:
        return 0, 0
    keys = []
    for request in requests:
        command = core_command(request)
        if isinstance(command, USER_COMMAND_TYPES) and command.idempotency_key is not None:
            keys.append((command.user_id, command.idempotency_key))
    missing = cache.protect(keys)
    if not missing or cache.complete or lookup is None:
        return 0, 0
    records = await lookup.idempotency_keys(missing)
    cache.load(records)
    return len(missing), len(records)
