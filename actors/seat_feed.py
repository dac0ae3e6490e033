"""The shard's seat feed (issue 13, DESIGN §7): after every commit, what it changed in each event's
seat map and GA pools, appended to that event's Redis stream, so the routers' live seat maps
(router/seat_stream.py) are pushed committed changes instead of polling the actor per stream.

Stream `ticketing:seats:{<event id>}` (MAXLEN ~ `seat_feed_stream_entries_max`, expiring
`seat_feed_stream_ttl_s` after the last entry). Entry fields:

- `e`: the shard's lease epoch; `n`: the event's sequence number within the epoch, from 1;
- `t`: the commit's time (POSIX seconds), the `as_of` of what the entry shows;
- `d`: JSON `{"s": [[section, row label, seat index in the row, status], …],
  "p": [[section, held, sold], …]}` — absolute values (a seat's status character as in the seat
  map, a pool's counters), so applying an entry twice, or after a fresher read, is harmless;
- a *reset* entry instead has `r` = 1 and `n` = 0: "read the seat map afresh". Each recovery
  appends one to the stream of every event of the shard that has a stream (`NOMKSTREAM`): a change
  committed just before a crash may never have been published.

Only committed changes are published (from the change records the commit wrote, never from memory,
which may already hold the next batch's uncommitted changes). A reader that sees a gap in `n` or a
new epoch has missed an entry and reads the seat map afresh.

Off the reply path and bounded: `committed` only builds the entries and queues them (at most
`seat_feed_queue_max`; beyond, an entry is dropped and counted, and its sequence gap makes readers
resync); one task sends them, pipelined, at most `seat_feed_batch_max` per round trip, each round
trip within `redis_timeout_s`. Redis down never slows or fails a commit: entries are counted as
failed and readers resync from the gap once Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson

from actors.inventory.changes import PoolCountersChanged, SeatsClaimed, SeatsReleased, SeatsSold

if TYPE_CHECKING:
    from actors.inventory.layout import Layout
    from actors.shard_metrics import ShardMetrics
    from cluster.settings import ShardBounds

log = logging.getLogger(__name__)

KEY_PREFIX = "ticketing:seats"
SEAT_STATUS = {SeatsClaimed: "h", SeatsSold: "s", SeatsReleased: "."}
RESET = {"r": 1, "n": 0}


def stream_key(event_id: UUID | str) -> str:
    """The event's stream; the `{…}` hash tag keeps one event's keys on one Redis Cluster slot."""
    return f"{KEY_PREFIX}:{{{event_id}}}"


def seat_changes(changes: Iterable[Any]) -> dict[UUID, tuple[dict[int, str], dict[str, tuple[int, int]]]]:
    """Per event: the last status of every seat the changes touched, and the last counters of every
    GA pool they touched."""
    touched: dict[UUID, tuple[dict[int, str], dict[str, tuple[int, int]]]] = {}
    for change in changes:
        kind = type(change)
        status = SEAT_STATUS.get(kind)
        if status is not None:
            seats = touched.setdefault(change.event_id, ({}, {}))[0]
            for seat_no in change.seat_nos:
                seats[seat_no] = status
        elif kind is PoolCountersChanged:
            touched.setdefault(change.event_id, ({}, {}))[1][change.section_id] = (change.held, change.sold)
    return touched


def render(layout: Layout, seats: dict[int, str], pools: dict[str, tuple[int, int]]) -> bytes:
    """The entry's `d` field: seats by (section, row label, index in the row)."""
    seated, starts = layout.seated, layout.seated_starts
    rendered = []
    for seat_no, status in seats.items():
        section = seated[bisect_right(starts, seat_no) - 1]
        row = bisect_right(section.row_starts, seat_no) - 1
        rendered.append((section.section_id, section.row_labels[row], seat_no - section.row_starts[row], status))
    return orjson.dumps({"s": rendered, "p": [(section_id, *counts) for section_id, counts in pools.items()]})


class SeatFeedPublisher:
    def __init__(self, redis_url: str, bounds: ShardBounds, metrics: ShardMetrics,
                 layout_of: Callable[[UUID], Layout | None]) -> None:
        self.redis_url = redis_url
        self.bounds = bounds
        self.metrics = metrics
        self.layout_of = layout_of
        self.epoch = -1
        self.sequence: dict[UUID, int] = {}
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=bounds.seat_feed_queue_max)
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        return bool(self.redis_url)

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="seat-feed-publisher")

    def committed(self, changes: Sequence[Any], epoch: int, at_s: float) -> None:
        """Queue one entry per event whose seats or pools `changes` (just committed) touched."""
        if not self.enabled:
            return
        if epoch != self.epoch:
            self.epoch, self.sequence = epoch, {}
        for event_id, (seats, pools) in seat_changes(changes).items():
            layout = self.layout_of(event_id)
            if layout is None:
                continue
            number = self.sequence[event_id] = self.sequence.get(event_id, 0) + 1
            self._put(stream_key(event_id), {"e": epoch, "n": number, "t": f"{at_s:.6f}",
                                             "d": render(layout, seats, pools)})

    def recovered(self, event_ids: Iterable[UUID], epoch: int) -> None:
        """After a recovery: every existing stream of the shard's events gets a reset entry."""
        if not self.enabled:
            return
        self.epoch, self.sequence = epoch, {}
        for event_id in event_ids:
            self._put(stream_key(event_id), {**RESET, "e": epoch, "t": f"{time.time():.6f}"})

    def _put(self, key: str, fields: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((key, fields))
        except asyncio.QueueFull:
            self.metrics.seat_feed_entries.labels(self.metrics.shard, "dropped").inc()

    async def _run(self) -> None:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        bounds = self.bounds
        client = aioredis.from_url(self.redis_url, socket_timeout=bounds.redis_timeout_s,
                                   socket_connect_timeout=bounds.redis_timeout_s)
        try:
            while True:
                batch = [await self._queue.get()]
                while not self._queue.empty() and len(batch) < bounds.seat_feed_batch_max:
                    batch.append(self._queue.get_nowait())
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(bounds.redis_timeout_s):
                        await self._send(client, batch)
                except (RedisError, OSError, TimeoutError) as error:
                    self.metrics.seat_feed_entries.labels(self.metrics.shard, "failed").inc(len(batch))
                    if not self._failing:
                        log.warning("shard %s: seat feed entries not published (%s: %s); readers resync "
                                    "when Redis answers", self.metrics.shard, type(error).__name__, error)
                    self._failing = True
                    continue
                if self._failing:
                    log.info("shard %s: seat feed publishing again", self.metrics.shard)
                    self._failing = False
                self.metrics.seat_feed_entries.labels(self.metrics.shard, "published").inc(len(batch))
                self.metrics.seat_feed_seconds.observe(time.perf_counter() - started)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _send(self, client: Any, batch: list[tuple[str, dict[str, Any]]]) -> None:
        bounds = self.bounds
        ttl_ms = int(bounds.seat_feed_stream_ttl_s * 1000)
        pipe = client.pipeline(transaction=False)
        for key, fields in batch:
            reset = "r" in fields
            pipe.xadd(key, fields, maxlen=bounds.seat_feed_stream_entries_max, approximate=True, nomkstream=reset)
            if not reset:
                pipe.pexpire(key, ttl_ms)
        await pipe.execute()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
