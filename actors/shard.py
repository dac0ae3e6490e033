"""The `EventShard` Ray actor: the single owner of every event whose slot maps to its shard.

The actor wraps the pure inventory core (`actors.inventory`) with I/O: it takes the shard lease,
loads its events from Postgres, applies command batches and group-commits their changes. This
module holds the Ray-facing shell; the options it is created with live in `cluster.raycluster`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """Everything a shard actor needs, passed at creation so Ray can restart it unaided."""

    shard_id: int
    slots: tuple[int, ...]
    dsn: str
    bounds: dict[str, Any] = field(default_factory=dict)


class EventShard:
    """Ray actor class (decorated with ``ray.remote`` by the bootstrap, not here, so the class stays
    importable and testable without a Ray runtime)."""

    def __init__(self, config: ShardConfig) -> None:
        self.config = config
        self.started_at = time.time()

    async def health(self) -> dict[str, Any]:
        return {
            "shard_id": self.config.shard_id,
            "slots": len(self.config.slots),
            "pid": os.getpid(),
            "started_at": self.started_at,
        }

    async def slots(self) -> list[int]:
        return list(self.config.slots)
