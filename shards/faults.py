"""Stores with a protection taken away, for negative controls (STYLE §10): each shows the bug its
protection prevents. Nothing in production builds these; tests pass one as a `ShardConfig.store`.
"""

from __future__ import annotations

from typing import Any

from shards.lookup import DurableLookup, EventLayouts
from shards.store import PostgresShardStore


class UnfencedStore(PostgresShardStore):
    """Commits without the lease check: two actors of one shard then both write."""

    async def commit(self, changes: list[Any], epoch: int | None) -> None:
        await super().commit(changes, None)

    async def probe(self, change_groups: list[tuple[Any, ...]], epoch: int | None) -> list[BaseException | None]:
        return await super().probe(change_groups, None)


class MemoryOnlyStore(PostgresShardStore):
    """No durable lookup: memory alone answers for holds it forgot and keys it dropped (the
    behaviour before reads and commands fell back to Postgres)."""

    def lookup(self, layouts: EventLayouts) -> DurableLookup | None:
        return None
