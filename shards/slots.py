"""Event → slot → shard (DESIGN §4).

``slot = xxhash64(event_id.bytes) % 256`` is fixed forever, so an event never changes slot. The
shard map assigns slots to shard ids and carries a version. The settings give the first map; slot
moves change it, recorded in the shard databases (shards/slot_moves.py), and routers merge what
the databases record over it (`ShardMap.with_owners`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import xxhash

SLOT_COUNT = 256


def slot_of(event_id: uuid.UUID) -> int:
    return xxhash.xxh64_intdigest(event_id.bytes) % SLOT_COUNT


@dataclass(frozen=True, slots=True)
class ShardMap:
    """`shard_of_slot[s]` is the shard that owns slot `s`."""

    shard_of_slot: tuple[int, ...]
    version: int = 1

    def __post_init__(self) -> None:
        if len(self.shard_of_slot) != SLOT_COUNT:
            raise ValueError(f"a shard map covers exactly {SLOT_COUNT} slots")

    @property
    def shard_ids(self) -> list[int]:
        return sorted(set(self.shard_of_slot))

    def shard_of(self, event_id: uuid.UUID) -> int:
        return self.shard_of_slot[slot_of(event_id)]

    def slots_of(self, shard_id: int) -> list[int]:
        return [slot for slot, owner in enumerate(self.shard_of_slot) if owner == shard_id]

    def with_owners(self, owners: dict[int, int], version: int) -> ShardMap:
        """This map with `owners` (slot → shard, as the shard databases record them: shards/slot_moves.py)
        taking precedence; a slot nobody owns right now (a move is copying it) keeps its shard here,
        which answers "slot moved" until the move is done."""
        merged = tuple(owners.get(slot, shard) for slot, shard in enumerate(self.shard_of_slot))
        return ShardMap(merged, max(version, self.version))

    @classmethod
    def even(cls, shard_count: int) -> ShardMap:
        if not 1 <= shard_count <= SLOT_COUNT:
            raise ValueError(f"shard_count must be in 1..{SLOT_COUNT}")
        return cls(tuple(slot * shard_count // SLOT_COUNT for slot in range(SLOT_COUNT)))

    @classmethod
    def parse(cls, text: str, shard_count: int) -> ShardMap:
        """Parse ``"0-127:0,128-255:1"``; every slot must be covered exactly once."""
        owners: list[int | None] = [None] * SLOT_COUNT
        for part in filter(None, (piece.strip() for piece in text.split(","))):
            try:
                span, shard_text = part.split(":")
                first_text, _, last_text = span.partition("-")
                first, last = int(first_text), int(last_text or first_text)
                shard = int(shard_text)
            except ValueError:
                raise ValueError(f"slot map entry {part!r} is not 'first-last:shard'") from None
            if not (0 <= first <= last < SLOT_COUNT) or not 0 <= shard < shard_count:
                raise ValueError(f"slot map entry {part!r} is out of range")
            for slot in range(first, last + 1):
                if owners[slot] is not None:
                    raise ValueError(f"slot {slot} is mapped twice")
                owners[slot] = shard
        missing = [slot for slot, owner in enumerate(owners) if owner is None]
        if missing:
            raise ValueError(f"slot map leaves {len(missing)} slots unmapped (first: {missing[0]})")
        return cls(tuple(owner for owner in owners if owner is not None))


# Ids of things that live in a shard (holds, orders, tickets) carry their event's slot, so that a
# request naming only such an id (GET /v1/holds/{id}) is routed without a directory lookup. They
# are RFC 9562 version-8 UUIDs: 48 bits of Unix milliseconds (so they sort by creation time, like
# v7), the version nibble, then the slot byte, then 70 random bits. The slot reveals nothing but
# which of 256 buckets the event hashes to.
ID_VERSION = 8


def new_id(slot: int, *, now_ms: int | None = None) -> uuid.UUID:
    import os
    import time

    if not 0 <= slot < SLOT_COUNT:
        raise ValueError(f"slot {slot} out of range")
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    random_bits = int.from_bytes(os.urandom(9), "big")
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= ID_VERSION << 76
    value |= slot << 68
    value |= ((random_bits >> 62) & 0xF) << 64  # 4 random bits
    value |= 0b10 << 62  # RFC 9562 variant
    value |= random_bits & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def slot_of_id(value: uuid.UUID) -> int | None:
    """The slot a hold/order/ticket id carries, or None if the id is not one of ours."""
    if value.version != ID_VERSION or value.variant != uuid.RFC_4122:
        return None
    return (value.int >> 68) & 0xFF
