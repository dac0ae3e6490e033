"""What a slot move decides from the ownership rows alone (cluster/slot_move.py): where it stands
after a crash at any step, which shard the slots leave, and the map routers build from the rows."""

from __future__ import annotations

import uuid

import pytest

from actors.event_bodies import settings_of
from actors.inventory import ShardInventory
from actors.inventory.changes import IdempotencyRecorded
from actors.inventory.commands import HoldGeneralAdmission
from cluster.slot_move import _source_of, parse_slot_range, slot_ranges
from shards.slot_moves import FENCED, MOVED, OWNED, SlotRow, owners_of
from shards.slots import ShardMap, new_id
from tests.core_limits import core_limits
from tests.writer_support import DOCUMENT, LAYOUT

pytestmark = pytest.mark.unit

SLOTS = [4, 5, 6]


def rows(**states: str) -> dict[int, list[SlotRow]]:
    """`rows(s0="owned", s1=None)`: shard 0 records SLOTS in that state, shard 1 nothing."""
    return {int(name[1:]): [] if state is None else [SlotRow(slot, state, 2) for slot in SLOTS]
            for name, state in states.items()}


@pytest.mark.parametrize(("states", "expected"), [
    ({"s0": OWNED, "s1": None}, (0, "fence")),  # not begun (or the fence did not commit)
    ({"s0": FENCED, "s1": None}, (0, "copy")),  # fenced: copy
    ({"s0": FENCED, "s1": OWNED}, (0, "clear")),  # copied: the target owns them, clear the source
    ({"s0": MOVED, "s1": OWNED}, (None, "adopt")),  # cleared: only the target's adoption may be missing
])
def test_a_move_resumes_from_what_the_databases_record(states: dict[str, str], expected: tuple[int | None, str]
                                                      ) -> None:
    assert _source_of(rows(**states), SLOTS, target=1) == expected


def test_slots_leaving_two_shards_are_refused_and_two_owners_are_reported() -> None:
    mixed = {0: [SlotRow(4, OWNED, 1)], 1: [SlotRow(5, OWNED, 1)], 2: []}
    with pytest.raises(ValueError, match="several shards"):
        _source_of(mixed, [4, 5], target=2)
    doubled = {0: [SlotRow(4, OWNED, 1)], 1: [SlotRow(4, FENCED, 1)], 2: []}
    with pytest.raises(RuntimeError, match="repair by hand"):
        _source_of(doubled, [4], target=2)


def test_routers_take_recorded_owners_and_keep_unowned_slots_where_they_were() -> None:
    before = ShardMap.even(4)
    owners, version = owners_of({0: [SlotRow(0, MOVED, 3), SlotRow(1, FENCED, 3)], 3: [SlotRow(0, OWNED, 3)]})
    after = before.with_owners(owners, version)
    assert (after.shard_of_slot[0], after.shard_of_slot[1], after.version) == (3, 0, 3)
    assert after.shard_of_slot[2:] == before.shard_of_slot[2:]
    assert owners_of({0: [], 1: []}) == ({}, 1)


def test_ranges_parse_and_print() -> None:
    assert parse_slot_range("3-5") == [3, 4, 5] and parse_slot_range("7") == [7]
    for bad in ("5-3", "0-256", "a-b", "-1"):
        with pytest.raises(ValueError):
            parse_slot_range(bad)
    assert slot_ranges([0, 1, 2, 7, 9, 10]) == "0-2,7,9-10" and slot_ranges([]) == "-"


def test_an_idempotency_key_records_the_slot_its_hold_id_carries() -> None:
    inventory = ShardInventory(core_limits(items_max=4))
    event_id = uuid.uuid4()
    inventory.create_event(event_id, LAYOUT, settings_of(DOCUMENT))
    ours = HoldGeneralAdmission(event_id, "ana", new_id(42), "floor", 1, None, "k1")
    foreign = HoldGeneralAdmission(event_id, "ana", uuid.uuid4(), "floor", 1, None, "k2")
    slots = [next(change.slot for change in inventory.apply(command, 1.0).changes
                  if isinstance(change, IdempotencyRecorded)) for command in (ours, foreign)]
    assert slots == [42, None]
