"""Moving a slot between two shard actors, step by step (shards/slot_moves.py), against real Ray and
two real Postgres databases: the fenced source answers `SlotMoved` (never applies, never a false
404) while its other slots go on; the target answers `SlotMoved` until it adopts, then serves the
event with its holds, sales and audit trail, and a replayed idempotency key gets the same answer as
before the move; the source keeps no row of the event. Negative control: rows copied without the
fence miss a hold the source acknowledged after the copy — the fence is what prevents that loss.
(tests/chaos/test_multinode.py moves slots under load through `ticketing slots move`.)
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from actors.inventory.commands import BeginCheckout, ConfirmCheckout, HoldGeneralAdmission
from actors.inventory.results import HoldView, OrderView
from actors.protocol import GetAvailability, SlotMoved
from cluster.slot_move import read_ownership
from shards.slot_moves import EVENT_TABLES, clear_source, copy_to_target
from shards.slots import new_id, slot_of
from tests.actor_support import ga_event_command, new_database, query, start_shard
from tests.harness import RunningCluster

pytestmark = pytest.mark.integration

VERSION = 2


def apply(handle: Any, *commands: Any) -> list[Any]:
    import ray

    return list(ray.get(handle.apply.remote(list(commands)), timeout=60))


def read(handle: Any, *queries: Any) -> list[Any]:
    import ray

    return list(ray.get(handle.read.remote(list(queries)), timeout=60))


def call(handle: Any, method: str, *args: Any) -> Any:
    import ray

    return ray.get(getattr(handle, method).remote(*args), timeout=120)


def create_event(handle: Any, capacity: int = 10) -> uuid.UUID:
    command = ga_event_command(capacity)
    (created,) = apply(handle, command)
    assert not isinstance(created, SlotMoved), created
    return command.event_id


def keyed_hold(event_id: uuid.UUID, user: str, quantity: int, key: str) -> HoldGeneralAdmission:
    return HoldGeneralAdmission(event_id, user, new_id(slot_of(event_id)), "floor", quantity, None, key)


async def move(source_dsn: str, target_dsn: str, slots: list[int], *, clear: bool = True) -> dict[str, int]:
    source, target = await asyncpg.connect(source_dsn), await asyncpg.connect(target_dsn)
    try:
        copied = await copy_to_target(source, target, slots, VERSION)
        if clear:
            await clear_source(source, target, slots, VERSION)
        return copied
    finally:
        await source.close()
        await target.close()


def rows_of(dsn: str, event_id: uuid.UUID) -> dict[str, int]:
    return {table: int(query(dsn, f"SELECT count(*) AS n FROM {table} WHERE event_id = $1", event_id)[0]["n"])
            for table in EVENT_TABLES}


def states(dsn: str, slot: int) -> str:
    (rows,) = asyncio.run(read_ownership([dsn])).values()
    return next(row.state for row in rows if row.slot == slot)


def test_a_fenced_slot_moves_with_its_rows_keys_and_sales(cluster: RunningCluster, ray_driver: None) -> None:
    source_dsn, target_dsn = new_database(cluster), new_database(cluster)
    source = start_shard(source_dsn)
    event_id, other_id = create_event(source), create_event(source)
    while slot_of(other_id) == slot_of(event_id):
        other_id = create_event(source)
    slot = slot_of(event_id)
    first = keyed_hold(event_id, "ana", 2, "k-ana")
    held, paid_hold = apply(source, first, keyed_hold(event_id, "ben", 1, "k-ben"))
    assert isinstance(held, HoldView) and isinstance(paid_hold, HoldView), (held, paid_hold)
    apply(source, BeginCheckout("ben", paid_hold.hold_id, "k-ben-pay"))
    (order,) = apply(source, ConfirmCheckout("ben", paid_hold.hold_id, new_id(slot), (new_id(slot),), "k-ben-ok"))
    assert isinstance(order, OrderView), order
    before = rows_of(source_dsn, event_id)
    target = start_shard(target_dsn, slots=tuple(s for s in range(256) if s != slot))

    call(source, "fence_slots", [slot], VERSION)
    assert states(source_dsn, slot) == "fenced"
    assert apply(source, keyed_hold(event_id, "cal", 1, "k-cal")) == [SlotMoved(slot)]
    assert read(source, GetAvailability(event_id)) == [SlotMoved(slot)]
    assert isinstance(apply(source, keyed_hold(other_id, "cal", 1, "k-cal-2"))[0], HoldView)  # other slots serve
    assert apply(target, keyed_hold(event_id, "cal", 1, "k-cal")) == [SlotMoved(slot)]  # not adopted: no 404

    copied = asyncio.run(move(source_dsn, target_dsn, [slot]))
    call(target, "adopt_slots", [slot])

    assert {table: copied[table] for table in EVENT_TABLES} == before, (copied, before)
    assert rows_of(target_dsn, event_id) == before
    assert sum(rows_of(source_dsn, event_id).values()) == 0
    assert (states(source_dsn, slot), states(target_dsn, slot)) == ("moved", "owned")
    assert apply(target, first) == [held]  # the key moved with its answer: a replay, not a second hold
    (availability,) = read(target, GetAvailability(event_id))
    assert [(s.available, s.held, s.sold) for s in availability.sections] == [(7, 2, 1)], availability
    assert isinstance(apply(target, keyed_hold(event_id, "cal", 1, "k-cal"))[0], HoldView)
    assert apply(source, keyed_hold(event_id, "dee", 1, "k-dee")) == [SlotMoved(slot)]
    owed = "SELECT topic, mail_planned FROM outbox WHERE event_id = $1 AND published_at IS NULL ORDER BY outbox_id"
    assert [tuple(row) for row in query(target_dsn, owed, event_id)] == [("order.confirmed", False)]  # handed over
    assert query(source_dsn, owed, event_id) == []
    audit = query(target_dsn, "SELECT entity FROM audit_log WHERE event_id = $1 ORDER BY audit_id", event_id)
    assert "order" in {row["entity"] for row in audit}, audit
    with pytest.raises(asyncpg.RaiseError, match="append-only"):  # the trail stays append-only outside a move
        query(target_dsn, "DELETE FROM audit_log WHERE event_id = $1", event_id)


def test_without_the_fence_an_acknowledged_hold_is_lost(cluster: RunningCluster, ray_driver: None) -> None:
    """Negative control: the same copy, but the source still serves the slot."""
    source_dsn, target_dsn = new_database(cluster), new_database(cluster)
    source = start_shard(source_dsn)
    event_id = create_event(source)
    asyncio.run(move(source_dsn, target_dsn, [slot_of(event_id)], clear=False))
    (late,) = apply(source, keyed_hold(event_id, "eve", 1, "k-eve"))
    assert isinstance(late, HoldView)  # acknowledged by the source after the copy ...
    assert query(target_dsn, "SELECT count(*) AS n FROM holds WHERE hold_id = $1", late.hold_id)[0]["n"] == 0
