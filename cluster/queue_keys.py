"""The waiting room's Redis keys (lua/waiting_room.lua), in one place for both of their readers: the
router, which runs the scripts (router/waiting_room.py), and the shard actors, which read how many
people wait for an event to price its dynamic sections (actors/actor.py `_pricing_loop`)."""

from __future__ import annotations

from uuid import UUID

KEY_PREFIX = "ticketing:queue"
KEY_NAMES = ("line", "seen", "admitted", "expired", "meta", "spent", "early", "waitlist", "wants", "eta")


def event_keys(event_id: UUID) -> list[str]:
    """The event's keys, in `lua/waiting_room.lua`'s KEYS order (one hash tag: one Redis slot)."""
    tag = f"{KEY_PREFIX}:{{{event_id}}}"
    return [f"{tag}:{name}" for name in KEY_NAMES]


def waiting_keys(event_id: UUID) -> tuple[str, str]:
    """The event's line and waiting list (both ZSETs): who is waiting for it."""
    keys = event_keys(event_id)
    return keys[KEY_NAMES.index("line")], keys[KEY_NAMES.index("waitlist")]
