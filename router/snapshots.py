"""Snapshots of the public reads (availability, seat maps) per router worker, so that a crowd
refreshing a page costs the shard actor that sells a few reads a second, not one per request
(issue 13, DESIGN §7).

A snapshot is the actor's answer to one read query, kept `read_snapshot_s` and stamped with the
time the read was *sent* — so its `as_of` is never later than the data it shows, and never more
than `read_snapshot_s` plus one actor call old. Concurrent misses of one query share one actor
call (single flight): a cold cache under a thousand readers asks once. At most
`read_snapshot_entries_max` snapshots per worker (emptied when full). Failures are not cached.
The answers say how old they are: `as_of` in the body, and `Age` / `Cache-Control: public,
max-age=⌈read_snapshot_s⌉` headers (`router.events_api.freshness_headers`), so browsers and CDNs in
front of the router may keep them as long as the router does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from prometheus_client import Counter

from router.http_metrics import at_zero

# Where a read's answer came from: a fresh snapshot, another request's read in flight, the actor.
# Each source's series exists at 0 from the start (`at_zero`), so the snapshot hit ratio is 0, not
# "no data", where nothing came from a snapshot (`read_snapshot_s=0` turns snapshots off).
READ_SOURCES = ("snapshot", "shared", "shard")
READS = at_zero(Counter("ticketing_read_snapshots_total", "Public reads by where the answer came from.", ["source"]),
                *READ_SOURCES)


class ReadSnapshots:
    def __init__(self, ttl_s: float, entries_max: int, clock: Callable[[], float] = time.monotonic) -> None:
        """`clock` measures freshness (a test passes its own)."""
        self.ttl_s = ttl_s
        self.clock = clock
        self.entries_max = entries_max
        self._entries: dict[Hashable, tuple[float, float, Any]] = {}  # key → (fresh until, as of, reply)
        self._in_flight: dict[Hashable, asyncio.Future[tuple[Any, float]]] = {}

    async def get(self, key: Hashable, read: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
        """(reply, as_of in POSIX seconds) for `key`: the snapshot if fresh, else `read()`."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self.clock():
            READS.labels("snapshot").inc()
            return entry[2], entry[1]
        waiting = self._in_flight.get(key)
        if waiting is not None:
            READS.labels("shared").inc()
            return await asyncio.shield(waiting)
        future: asyncio.Future[tuple[Any, float]] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        READS.labels("shard").inc()
        as_of_s, fresh_from = time.time(), self.clock()
        try:
            reply = await read()
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            if self.ttl_s > 0:
                if len(self._entries) >= self.entries_max:
                    self._entries.clear()
                self._entries[key] = (fresh_from + self.ttl_s, as_of_s, reply)
            future.set_result((reply, as_of_s))
            return reply, as_of_s
        finally:
            del self._in_flight[key]
