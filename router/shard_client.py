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
import logging
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from actors.wire import decode_replies, encode_requests
from cluster.logs import shared_context
from cluster.settings import Settings
from router.http_metrics import at_zero
from router.runtime import Runtime

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
                if not pending.future.done():
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
        self.shard_map = settings.shard_map()
        self._lanes: dict[tuple[int, str], _Lane] = {}
        for shard in map(str, range(settings.shard_count)):
            at_zero(REJECTED, *((shard, reason) for reason in SHARD_REJECTIONS))
            at_zero(RETRIES, shard)

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
        for lane in self._lanes.values():
            if lane.task is not None:
                lane.task.cancel()
