"""The router's way to its shard actors: hash → shard → micro-batched actor calls (DESIGN §2, §5).

One `ShardClient` per router process, one lane per (shard, kind) where kind is ``apply``
(commands, answered after their group commit) or ``read`` (answered from the actor's memory).
Requests queue in a bounded queue (full → `Overloaded`, a 503 with Retry-After); a batcher task
sends whatever is queued as *one* actor call, and keeps up to `shard_calls_in_flight_max` calls per
lane in flight, so under load batches grow by themselves while at low load a request goes out at once.
Every call has a timeout. When the actor dies, the lane re-resolves the named actor and retries
only what is safe to repeat: reads, and commands that carry an idempotency key (the actor
deduplicates them). Anything else fails with `ShardUnavailable`: it may or may not have happened,
and only the client, holding its own key, can retry it safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from actors.protocol import SlotMoved
from actors.wire import decode_replies, encode_requests
from cluster.logs import shared_context
from cluster.settings import Settings
from router.http_metrics import at_zero
from router.runtime import Runtime
from shards.slot_moves import SlotRow, owners_of, read_rows

log = logging.getLogger(__name__)

# The lanes' bounds are settings: queue depth, batch size and wait, calls in flight, retries and
# their backoff (cluster/settings.py, which records why they are what they are).

BATCH_SIZE = Histogram("ticketing_shard_batch_size", "Requests per actor call.", ["shard", "kind"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
CALL_LATENCY = Histogram("ticketing_shard_call_duration_seconds", "Actor call latency, router side.",
                         ["shard", "kind"],
                         buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
QUEUE_DEPTH = Gauge("ticketing_shard_queue_depth", "Requests waiting for a batch.", ["shard", "kind"],
                    multiprocess_mode="livesum")
REJECTED = Counter("ticketing_shard_rejected_total", "Requests refused or failed by the shard client.",
                   ["shard", "reason"])
# Why the client refuses or fails a request: its lane's queue is full, the actor did not answer in
# time, the actor failed and the request could not be retried. ShardClient creates each shard's
# series at 0 (`at_zero`).
SHARD_REJECTIONS = ("queue_full", "timeout", "actor_failed")
RETRIES = Counter("ticketing_shard_retries_total", "Requests retried after an actor failure.", ["shard"])
# Slot moves (shards/slot_moves.py): requests a shard answered "slot moved", by what the router did
# (resent: to the new owner or, while the move copies, to the same shard after a wait; gave_up:
# 503 after slot_moved_retries_max), the shard-map reads by result, and the version in use.
SLOT_MOVED = Counter("ticketing_router_slot_moved_total", "Requests a shard answered 'slot moved', by outcome.",
                     ["outcome"])
SLOT_MOVED_OUTCOMES = ("resent", "gave_up")
MAP_READS = Counter("ticketing_router_shard_map_reads_total", "Shard-map reads from the shard databases, by result.",
                    ["result"])
MAP_READ_RESULTS = ("changed", "unchanged", "failed")
MAP_VERSION = Gauge("ticketing_router_shard_map_version", "Shard-map version this router process uses.",
                    multiprocess_mode="max")


class ShardUnavailable(Exception):
    """The shard did not answer (timeout, actor dead, commit failed). Maps to 503."""


class Overloaded(ShardUnavailable):
    """The shard's queue is full. Maps to 503 with Retry-After."""


@dataclass(slots=True)
class _Pending:
    request: Any
    future: asyncio.Future[Any]
    retryable: bool
    attempts: int = 0
    moves: int = 0  # "slot moved" answers followed so far


class _Lane:
    def __init__(self, client: ShardClient, shard_id: int, kind: str) -> None:
        self.client = client
        self.shard_id = shard_id
        self.kind = kind
        self.method = f"{kind}_wire"  # apply_wire / read_wire: the compact encoding of actors.wire
        settings = client.settings
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=settings.shard_queue_depth_max)
        self.slots = asyncio.Semaphore(settings.shard_calls_in_flight_max)
        self.in_flight = 0
        self.labels = (str(shard_id), kind)
        self.depth = QUEUE_DEPTH.labels(*self.labels)
        self.task: asyncio.Task[None] | None = None
        self.filling: asyncio.Future[None] | None = None  # set while a batch waits to fill
        self.calls: set[asyncio.Task[None]] = set()

    def submit(self, pending: _Pending) -> None:
        try:
            self.queue.put_nowait(pending)
        except asyncio.QueueFull:
            REJECTED.labels(str(self.shard_id), "queue_full").inc()
            raise Overloaded(f"shard {self.shard_id} has {self.queue.qsize()} requests queued") from None
        self.depth.inc()
        if self.filling is not None and self.queue.qsize() >= self.client.settings.batch_size_max - 1:
            _wake(self.filling)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), context=shared_context())

    async def _run(self) -> None:
        settings = self.client.settings
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            await self.slots.acquire()  # while all calls are in flight, the queue keeps filling
            if self.in_flight and self.queue.qsize() < settings.batch_size_max - 1 and settings.batch_wait_ms_max:
                # Another call is on its way: let this batch fill for up to batch_wait_ms_max (one
                # timer, woken early by `submit` when a full batch is queued). With nothing in
                # flight a lone request goes at once.
                self.filling = loop.create_future()
                timer = loop.call_later(settings.batch_wait_ms_max / 1000, _wake, self.filling)
                try:
                    await self.filling
                finally:
                    timer.cancel()
                    self.filling = None
            batch = [first]
            while len(batch) < settings.batch_size_max and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self.depth.dec(len(batch))
            self.in_flight += 1
            call = loop.create_task(self._call(batch))
            self.calls.add(call)  # the loop keeps only weak references to tasks
            call.add_done_callback(self.calls.discard)

    async def _call(self, batch: list[_Pending]) -> None:
        settings = self.client.settings
        shard = str(self.shard_id)
        BATCH_SIZE.labels(*self.labels).observe(len(batch))
        started = time.perf_counter()
        try:
            handle = self.client.runtime.actor(self.shard_id)
            method = getattr(handle, self.method)
            wire = encode_requests([pending.request for pending in batch])
            replies = decode_replies(await asyncio.wait_for(method.remote(wire), settings.actor_call_timeout_s))
        except TimeoutError:
            REJECTED.labels(shard, "timeout").inc()
            self._fail(batch, ShardUnavailable(f"shard {shard} did not answer in {settings.actor_call_timeout_s} s"))
        except Exception as error:  # Ray raises actor-died/unavailable errors, or the commit failed
            self.client.runtime.forget_actor(self.shard_id)
            log.warning("shard %s call failed: %s: %s", shard, type(error).__name__, str(error)[:300])
            self._retry_or_fail(batch, error)
        else:
            for pending, reply in zip(batch, replies, strict=True):
                if type(reply) is SlotMoved:  # nothing was applied: safe to send again, keyed or not
                    self.client.follow_move(pending, reply.slot, self.kind)
                elif not pending.future.done():
                    pending.future.set_result(reply)
        finally:
            CALL_LATENCY.labels(*self.labels).observe(time.perf_counter() - started)
            self.in_flight -= 1
            self.slots.release()

    def _retry_or_fail(self, batch: list[_Pending], error: Exception) -> None:
        shard = str(self.shard_id)
        retries_max, backoff_s = self.client.settings.shard_call_retries_max, self.client.settings.shard_retry_backoff_s
        for pending in batch:
            if pending.retryable and pending.attempts < retries_max:
                delay = backoff_s[min(pending.attempts, len(backoff_s) - 1)]
                pending.attempts += 1
                RETRIES.labels(shard).inc()
                asyncio.get_running_loop().call_later(delay, self._resubmit, pending)
            elif not pending.future.done():
                REJECTED.labels(shard, "actor_failed").inc()
                pending.future.set_exception(ShardUnavailable(f"shard {shard} failed: {type(error).__name__}"))

    def _resubmit(self, pending: _Pending) -> None:
        if pending.future.done():
            return
        try:
            self.submit(pending)
        except Overloaded as error:
            pending.future.set_exception(error)

    def _fail(self, batch: list[_Pending], error: Exception) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ShardClient:
    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.shard_map = settings.shard_map()  # the settings' until the databases are read
        self._lanes: dict[tuple[int, str], _Lane] = {}
        self._map_read: asyncio.Task[None] | None = None
        self._map_read_at = 0.0
        self._map_timer: asyncio.Task[None] | None = None
        self._following: set[asyncio.Task[None]] = set()
        for shard in map(str, range(settings.shard_count)):
            at_zero(REJECTED, *((shard, reason) for reason in SHARD_REJECTIONS))
            at_zero(RETRIES, shard)
        at_zero(SLOT_MOVED, *((outcome,) for outcome in SLOT_MOVED_OUTCOMES))
        at_zero(MAP_READS, *((result,) for result in MAP_READ_RESULTS))
        MAP_VERSION.set(self.shard_map.version)

    # --- the shard map (shards/slot_moves.py) ---------------------------------------------------------

    def follow_move(self, pending: _Pending, slot: int, kind: str) -> None:
        """A shard answered "slot moved": read the map again and resend to the slot's owner; while
        nobody owns it (the move is copying), wait and ask again, at most slot_moved_retries_max
        times."""
        settings = self.settings
        if pending.moves >= settings.slot_moved_retries_max:
            SLOT_MOVED.labels("gave_up").inc()
            if not pending.future.done():
                pending.future.set_exception(ShardUnavailable(f"slot {slot} is being moved between shards"))
            return
        pending.moves += 1
        SLOT_MOVED.labels("resent").inc()
        task = asyncio.get_running_loop().create_task(self._resend(pending, slot, kind), context=shared_context())
        self._following.add(task)
        task.add_done_callback(self._following.discard)

    async def _resend(self, pending: _Pending, slot: int, kind: str) -> None:
        before = self.shard_map.shard_of_slot[slot]
        await self.read_map()
        owner = self.shard_map.shard_of_slot[slot]
        if owner == before:
            await asyncio.sleep(self.settings.slot_moved_retry_s)
        if pending.future.done():
            return
        try:
            self._lane(owner, kind).submit(pending)
        except Overloaded as error:
            pending.future.set_exception(error)

    async def read_map(self) -> None:
        """Read the shard map from the shard databases (one read in flight per process, at most
        one per `slot_moved_retry_s`); a failed read keeps the map in use."""
        if self._map_read is None or (self._map_read.done()
                                      and time.monotonic() - self._map_read_at >= self.settings.slot_moved_retry_s):
            self._map_read = asyncio.get_running_loop().create_task(self._read_map())
        await asyncio.shield(self._map_read)

    async def _read_map(self) -> None:
        try:
            rows = await asyncio.gather(*(self._slot_rows(shard_id) for shard_id in range(self.settings.shard_count)))
        except Exception as error:  # a shard database down: route by the map in use, retry later
            MAP_READS.labels("failed").inc()
            log.warning("shard map read failed: %s: %s", type(error).__name__, error)
            return
        finally:
            self._map_read_at = time.monotonic()
        owners, version = owners_of(dict(enumerate(rows)))
        updated = self.shard_map.with_owners(owners, version)  # unowned slots: where they went before
        changed = updated.shard_of_slot != self.shard_map.shard_of_slot
        MAP_READS.labels("changed" if changed else "unchanged").inc()
        if changed or updated.version != self.shard_map.version:
            log.info("shard map version %d (was %d)", updated.version, self.shard_map.version)
        self.shard_map = updated
        MAP_VERSION.set(self.shard_map.version)

    async def _slot_rows(self, shard_id: int) -> list[SlotRow]:
        pool = await self.runtime.databases.pool(shard_id)
        return await read_rows(pool)

    def start(self) -> None:
        """Read the map now and every `shard_map_refresh_s` (until `close`)."""
        self._map_timer = asyncio.get_running_loop().create_task(self._keep_map_fresh())

    async def _keep_map_fresh(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # _read_map logs and counts its own failures
                await self.read_map()
            await asyncio.sleep(self.settings.shard_map_refresh_s)

    def _lane(self, shard_id: int, kind: str) -> _Lane:
        lane = self._lanes.get((shard_id, kind))
        if lane is None:
            lane = self._lanes[(shard_id, kind)] = _Lane(self, shard_id, kind)
        return lane

    async def apply(self, shard_id: int, command: Any, *, retryable: bool) -> Any:
        """Send one command through the shard's batcher; returns the actor's reply for it."""
        return await self._submit(shard_id, "apply", command, retryable)

    async def read(self, shard_id: int, query: Any) -> Any:
        return await self._submit(shard_id, "read", query, True)

    async def _submit(self, shard_id: int, kind: str, request: Any, retryable: bool) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._lane(shard_id, kind).submit(_Pending(request, future, retryable))
        return await future

    async def close(self) -> None:
        if self._map_timer is not None:
            self._map_timer.cancel()
        for task in self._following:
            task.cancel()
        for lane in self._lanes.values():
            if lane.task is not None:
                lane.task.cancel()
