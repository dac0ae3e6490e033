"""Taking the shard lease (DESIGN §5 "Recovery" and "Fencing").

An actor that starts takes the lease by incrementing the epoch; from then on every write
transaction of an older epoch is refused (`shards.writer.check_lease`). The increment waits for any
in-flight batch of the previous holder (it holds the lease row ``FOR SHARE``), so after
`take_lease` returns, the previous holder can no longer commit anything.
"""

from __future__ import annotations

import asyncpg


async def take_lease(
    connection: asyncpg.Connection, shard_id: int, holder: str, *, force_epoch: int | None = None
) -> int:
    """Become the shard's writer; returns the new epoch.

    ``force_epoch`` jumps to a given epoch (operators and tests use it to fence a suspected zombie
    deliberately); it never moves the epoch backwards.
    """
    async with connection.transaction():
        epoch = await connection.fetchval(
            """INSERT INTO shard_lease AS l (shard_id, epoch, holder) VALUES ($1, 1, $2)
               ON CONFLICT (shard_id) DO UPDATE
               SET epoch = GREATEST(l.epoch + 1, COALESCE($3, 0)), holder = $2, acquired_at = now()
               RETURNING epoch""",
            shard_id, holder, force_epoch)
    return int(epoch)

