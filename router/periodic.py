"""Background rounds over every shard, run by each router worker: the checkout resolver, the event
cancellation, the webhook and mail relays.

Each is a `ShardRounds`: every `interval_s` it runs its round on each shard in turn. A round that
raises is logged and simply runs again at the next interval (its work is idempotent and its state
durable, so nothing is lost by a failed round); one shard's failure never holds up the others.
Which worker does a shard's round, when several could, is the round's own business: a Redis lock
(`redis_lock`, for work that is only deduplicated by it) or a Postgres advisory lock (for work that
must have one reader, like the outbox relays).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Round = Callable[[int], Awaitable[Any]]


class ShardRounds:
    def __init__(self, name: str, shard_count: int, interval_s: float, round_: Round) -> None:
        self.name = name
        self.shard_count = shard_count
        self.interval_s = interval_s
        self.round = round_
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            for shard_id in range(self.shard_count):
                try:
                    await self.round(shard_id)
                except Exception as error:  # retried at the next interval
                    log.warning("%s round on shard %s failed: %s", self.name, shard_id, error)


async def redis_lock(redis: Any, key: str, ttl_s: float) -> bool:
    """Whether this worker takes `key` for `ttl_s` (SET NX PX). Without Redis, or when it fails,
    every worker goes ahead: the lock only saves duplicate work that is safe to repeat."""
    if redis is None:
        return True
    try:
        return bool(await redis.set(key, "1", nx=True, px=int(ttl_s * 1000)))
    except Exception:
        return True
