"""`ShardActor`, the Ray actor that is the single owner of every event whose slot maps to its shard.

It wraps the pure inventory core with I/O (DESIGN §5), and is itself only lifecycle, the command
path and two timers; the rest are collaborators given what they need:

- its storage is a `ShardStore` port (`shards.store`): lease, load, commit, probe, lookup, purge;
- what recovery builds and commands change is one `ShardState` (`actors.catalog`): the core's
  `ShardInventory`, the events' documents, the epoch, the events recovery refused;
- recovery is `actors.restore`, applying a call `actors.applying`, reads `actors.reads`, poison
  isolation `actors.isolation`, commands on forgotten holds `actors.ended_holds`, the group
  commit `actors.committer`.

On start it takes the shard lease and rebuilds memory from Postgres; ``apply`` applies a batch of
requests synchronously (no await between check and mutation) and answers only after the group
committer has committed their changes; ``read`` answers from memory (and from Postgres for what
memory forgot); a timer expires holds through the same command path, another purges old keys.

Failure handling is fail-stop. A failed or unknown commit fails every uncommitted reply with
`Unavailable` and the actor rebuilds from Postgres before serving again (taking a new epoch
first, which waits out any in-doubt transaction of the old one); a commit Postgres *refused* is
isolated instead. A commit refused by the lease (`Fenced`) means another actor owns the shard:
this one stops for good. A broken invariant is a bug: the process exits and Ray restarts it, and
recovery rebuilds from Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from actors.applying import ApplyRules, apply_all, event_of
from actors.catalog import ShardState
from actors.committer import CommitFailed, Entry, GroupCommitter
from actors.ended_holds import answer_ended_holds
from actors.inventory import ShardInventory
from actors.inventory.changes import IdempotencyRecorded
from actors.inventory.pricing import Demand, DemandRule
from actors.inventory.results import Outcome
from actors.isolation import ApplyCrashed, PoisonIsolation
from actors.protocol import ShellOutcome, SlotMoved, Unavailable, core_command
from actors.reads import answer_query
from actors.recording import record_outcomes
from actors.restore import load_keys, restore_shard
from actors.seat_feed import SeatFeedPublisher
from actors.shard_metrics import ShardMetrics
from actors.wire import decode_requests, encode_replies
from cluster.logs import configure_logging
from cluster.native import CORE_STATUS
from cluster.queue_keys import waiting_keys
from cluster.settings import ShardBounds
from shards.lookup import DurableLookup, LookupFailed, PurgeInterrupted
from shards.slot_moves import FENCED, OWNED
from shards.slots import slot_of, slot_of_id
from shards.store import DATABASE_ERRORS, PostgresShardStore, ShardStore, StoreBounds, StoreFactory
from shards.writer import Fenced

log = logging.getLogger(__name__)

# The actor allocates a few short-lived objects per command and keeps millions of long-lived ones
# (holds, the recovered state). Collecting the youngest generation every 700 allocations (the
# default) spent 6-9% of a hold in the collector (measured), and every full collection would walk
# the recovered heap, which `gc.freeze` moves out of the collector's sight after each recovery.
GC_YOUNG_THRESHOLD = 50_000
QUARANTINED = "this event's stored rows are inconsistent: it is not served"


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """Everything a shard actor needs, passed at creation so Ray can restart it unaided."""

    shard_id: int
    slots: tuple[int, ...]
    dsn: str
    bounds: ShardBounds = field(default_factory=ShardBounds.defaults)
    # The storage adapter; tests pass one with a protection taken away (shards/faults.py).
    store: StoreFactory = PostgresShardStore
    # Negative-control switches (STYLE §10), production never sets them: user commands without
    # their idempotency keys; a refused value failing its whole batch (no poison isolation).
    idempotency: bool = True
    isolation: bool = True
    # Where committed seat changes are published for the live seat maps (actors/seat_feed.py);
    # empty: not published (isolated shards of tests and benchmarks). Last, so that the positional
    # fields above keep their places (loadtest/isolated.py passes them so).
    redis_url: str = ""


class ShardActor:
    """Ray actor class (made remote by `cluster.raycluster`, so it stays importable without Ray)."""

    # Wall-clock time of the last group commit (`health`, `ticketing status`); None before the first.
    last_commit_at: float | None = None

    def __init__(self, config: ShardConfig) -> None:
        self.config = config
        self.bounds = config.bounds
        self.started_at = time.time()
        configure_logging(config.bounds.log_level)  # JSON lines in Ray's worker log, like every process
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = ShardMetrics(config.shard_id)
        self.metrics.watch_stock(self._stock, config.bounds.metrics_sections_max)
        self.rules = ApplyRules(config.shard_id, frozenset(config.slots), config.bounds.event_seats_max,
                                config.idempotency)
        self.state = ShardState(ShardInventory(config.bounds.inventory_limits()))
        self.store: ShardStore = config.store(config.shard_id, config.dsn, StoreBounds.of(config.bounds))
        self.lookup: DurableLookup | None = None
        bounds = config.bounds
        self.committer = GroupCommitter(
            self._commit, queue_batches_max=bounds.commit_queue_batches_max,
            batch_commands_max=bounds.commit_batch_commands_max, batch_wait_ms_max=bounds.commit_wait_ms_max,
            on_failure=self._on_commit_failure, on_commit=self._on_commit,
            on_poison=self._isolate_poison if config.isolation else None)
        self.seat_feed = SeatFeedPublisher(config.redis_url, bounds, self.metrics, self._layout_of)
        self.isolation = PoisonIsolation(config.shard_id, self.metrics, probe=self._probe,
                                         rebuild=self._recover_until_done, apply=self._apply_after_rebuild,
                                         commit=self._commit)
        # How many rebuilds or isolations are under way: the shard serves again when the last ends.
        self._paused = 0
        self._uncommitted_keys: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._start_task: asyncio.Task[None] | None = None
        # Set while the shard serves: cleared by a pause (rebuild, isolation), awaited by calls.
        self._ready = asyncio.Event()
        self._timers: list[asyncio.Task[None]] = []  # held so the tasks are not collected
        self._pricing_redis: Any = None  # made on the first pricing round with dynamic sections
        # The slots this shard serves: the settings' until recovery reads `slot_owners` (a slot move
        # changes it, shards/slot_moves.py). A request on any other slot is answered `SlotMoved`.
        self.owned: frozenset[int] = frozenset(config.slots)
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    # --- start, recovery, rebuild -----------------------------------------------------------------

    async def _started(self) -> None:
        if self._start_task is None:
            self._start_task = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._start_task)
        await self._ready.wait()

    async def _start(self) -> None:
        for attempt in range(self.bounds.actor_start_attempts_max):
            try:
                await self.store.open()
                await self._recover()
                break
            except DATABASE_ERRORS as error:
                log.warning("shard %s start attempt %d failed: %r", self.config.shard_id, attempt + 1, error)
                self.store.close()
                await asyncio.sleep(self.bounds.actor_start_retry_s)
        else:
            # Exit rather than live on unable to serve: Ray restarts the process and it tries anew.
            log.critical("shard %s could not recover after %d attempts: exiting", self.config.shard_id,
                         self.bounds.actor_start_attempts_max)
            os._exit(75)
        self.lookup = self.store.lookup(self._event_layout)
        self.committer.start()
        self.seat_feed.start()
        loop = asyncio.get_running_loop()
        self._timers = [loop.create_task(self._expire_loop()), loop.create_task(self._purge_loop()),
                        loop.create_task(self._pricing_loop())]
        self._ready.set()

    async def _recover(self) -> None:
        started = time.perf_counter()
        gc.unfreeze()  # the state being replaced must become collectable (holds and events form cycles)
        rows = await self.store.slot_rows(list(self.config.slots))
        owned = frozenset(row.slot for row in rows if row.state == OWNED)
        self.state = await restore_shard(self.store, self.config.shard_id, sorted(owned),
                                         self.bounds.inventory_limits(), self.holder)
        self.owned = owned
        self.rules = dataclasses.replace(self.rules, slots=owned)
        self.metrics.slots_owned.set(len(owned))
        self.metrics.slots_fenced.set(sum(1 for row in rows if row.state == FENCED))
        self.metrics.map_version.set(max((row.version for row in rows), default=1))
        gc.collect()
        gc.freeze()
        elapsed = time.perf_counter() - started
        metrics, state = self.metrics, self.state
        metrics.recovery_seconds.set(elapsed)
        metrics.recoveries.inc()
        metrics.epoch.set(state.epoch)
        metrics.core_compiled.set(1 if CORE_STATUS.compiled else 0)
        metrics.events.set(len(state.catalog))
        metrics.events_quarantined.set(len(state.quarantined))
        metrics.active_holds.set(state.inventory.live_hold_count())
        self.seat_feed.recovered(list(state.inventory.events), state.epoch)
        log.info("shard %s recovered %d events at epoch %d in %.3f s", self.config.shard_id, len(state.catalog),
                 state.epoch, elapsed)

    def _on_commit_failure(self, error: BaseException) -> None:
        reason = "fenced" if isinstance(error, Fenced) else type(error).__name__
        self.metrics.commit_failures.labels(self.metrics.shard, reason).inc()
        self._pause()
        if isinstance(error, Fenced):
            log.error("shard %s fenced out (%s): stopping this actor for good", self.config.shard_id, error)
            asyncio.get_running_loop().call_soon(self._exit)
            return
        asyncio.get_running_loop().create_task(self._rebuild())

    def _pause(self) -> None:
        """Stop taking calls (they wait in `apply`) until the matching `_resume`."""
        self._paused += 1
        self._ready.clear()

    def _resume(self) -> None:
        self._paused -= 1
        if self._paused == 0:
            self.committer.reset()
            self._ready.set()

    def _exit(self) -> None:
        import ray

        ray.actor.exit_actor()  # an intentional exit: Ray does not restart a fenced actor

    async def _rebuild(self) -> None:
        """Fail-stop: forget memory, take a new epoch (waits out in-doubt commits), reload."""
        await self._recover_until_done()
        self._resume()

    async def _recover_until_done(self) -> None:
        while True:
            try:
                await self._recover()
                return
            except Exception as error:
                log.warning("shard %s rebuild failed, retrying: %s", self.config.shard_id, error)
                await asyncio.sleep(self.bounds.actor_start_retry_s)

    # --- poison isolation (actors/isolation.py) ---------------------------------------------------

    async def _isolate_poison(self, entries: list[Entry], error: BaseException) -> None:
        """The committer's `on_poison`: a commit refused a value; isolate the command(s) behind it."""
        self._pause()
        try:
            await self.isolation.commit_refused(entries, error)
        finally:
            self._resume()

    async def _apply_crashed(self, requests: list[Any], crash: ApplyCrashed) -> list[Any]:
        self._pause()
        try:
            replies = await self.isolation.apply_crashed(requests, crash, self.committer.drain)
        except CommitFailed as error:
            return [Unavailable(str(error)) for _ in requests]
        finally:
            self._resume()
        return replies

    async def _probe(self, change_groups: list[tuple[Any, ...]]) -> list[BaseException | None]:
        return await self.store.probe(change_groups, self.state.epoch)

    async def _apply_after_rebuild(self, requests: list[Any]) -> list[Outcome | ShellOutcome]:
        """Isolation's re-application: as `apply`, minus the readiness wait (the shard is paused
        for exactly this), keys first — the rebuilt cache may lack keys of these requests, and the
        rebuilt memory the ended holds they name (actors/ended_holds.py)."""
        if not await self._fetch_evicted_keys(requests):
            raise CommitFailed("the idempotency keys could not be read from Postgres")
        answered = await self._answers_without_applying(requests)
        passing = [request for index, request in enumerate(requests) if index not in answered]
        applied = apply_all(self.state, self.rules, passing, time.time()) if passing else []
        return _spliced(len(requests), {index: ShellOutcome(reply) for index, reply in answered.items()}, applied)

    # --- the command path ---------------------------------------------------------------------------

    async def apply(self, requests: list[Any]) -> list[Any]:
        while True:
            if not self._ready.is_set():
                await self._started()
            if not await self._fetch_evicted_keys(requests):
                return [Unavailable("the idempotency keys could not be read from Postgres") for _ in requests]
            answered = await self._answers_without_applying(requests)
            if self._ready.is_set():  # still: a rebuild may have begun while Postgres was asked
                break
        if not answered:
            return await self._apply_ready(requests)
        passing = [request for index, request in enumerate(requests) if index not in answered]
        return _spliced(len(requests), answered, await self._apply_ready(passing) if passing else [])

    async def _answers_without_applying(self, requests: list[Any]) -> dict[int, Any]:
        """Replies, by index, to the requests that must not reach the core: commands on ended holds
        memory forgot (answered from Postgres, actors/ended_holds.py) and calls on an event recovery
        refused. Empty for almost every batch."""
        answered = await answer_ended_holds(self.state.inventory, self.lookup, requests)
        answered.update(self._not_owned(requests))  # after: a moved hold's lookup finds nothing here
        state = self.state
        if state.quarantined:
            for index, request in enumerate(requests):
                if state.is_quarantined(event_of(request)):
                    answered[index] = Unavailable(QUARANTINED)
        return answered

    def _not_owned(self, requests: list[Any]) -> dict[int, SlotMoved]:
        """`SlotMoved` for each request on a slot this shard does not serve (a router with an older
        shard map sent it): nothing of it is applied, the router sends it to the owner."""
        refused = {}
        owned = self.owned
        for index, request in enumerate(requests):
            slot = _slot_of_request(request)
            if slot is not None and slot not in owned:
                refused[index] = SlotMoved(slot)
        if refused:
            self.metrics.slot_moved.inc(len(refused))
        return refused

    async def _apply_ready(self, requests: list[Any]) -> list[Any]:
        started = time.perf_counter()
        try:
            outcomes = apply_all(self.state, self.rules, requests, time.time())
        except ApplyCrashed as crash:
            return await self._apply_crashed(requests, crash)
        self.metrics.apply_seconds.observe(time.perf_counter() - started)
        self.metrics.apply_batch_size.observe(len(requests))
        return await self._commit_and_reply(requests, outcomes)

    async def _commit_and_reply(self, requests: list[Any], outcomes: list[Outcome | ShellOutcome]) -> list[Any]:
        changes = [change for outcome in outcomes for change in outcome.changes]
        keys = [(change.user_id, change.key) for change in changes if type(change) is IdempotencyRecorded]
        own: asyncio.Future[Any] | None = None
        if changes:
            own = self.committer.submit(changes, sum(1 for outcome in outcomes if outcome.changes), requests,
                                        outcomes)
            for key in keys:
                self._uncommitted_keys[key] = own
        originals = self._pending_originals(requests, outcomes)
        try:
            # Not None: poison isolation re-applied this call's requests, and these are the replies.
            reapplied = None if own is None else await asyncio.shield(own)
            originals_reapplied = [await asyncio.shield(original) for original in originals]
        except CommitFailed as error:
            return [Unavailable(str(error)) for _ in outcomes]
        finally:
            self._forget_committed(keys)
        if reapplied is not None:
            return list(reapplied)
        if any(result is not None for result in originals_reapplied):
            return await self._replay_again(requests, outcomes)
        record_outcomes(self.metrics, requests, outcomes)
        return [outcome.result for outcome in outcomes]

    async def _replay_again(self, requests: list[Any], outcomes: list[Outcome | ShellOutcome]) -> list[Any]:
        """A replay answered from the cache before poison isolation re-decided its original: the
        cached answer may be stale, so replay it once more against the rebuilt memory."""
        replayed = [index for index, outcome in enumerate(outcomes) if outcome.replayed]
        replies = [outcome.result for outcome in outcomes]
        for index, reply in zip(replayed, await self.apply([requests[index] for index in replayed]), strict=True):
            replies[index] = reply
        return replies

    def _pending_originals(self, requests: list[Any], outcomes: list[Outcome | ShellOutcome]
                           ) -> list[asyncio.Future[Any]]:
        """A replayed result must not be sent before the original's commit: wait for it too."""
        pending = []
        for request, outcome in zip(requests, outcomes, strict=True):
            if outcome.replayed:
                command = core_command(request)
                future = self._uncommitted_keys.get((command.user_id, command.idempotency_key))
                if future is not None:
                    pending.append(future)
        return pending

    def _forget_committed(self, keys: list[tuple[str, str]]) -> None:
        for key in keys:
            future = self._uncommitted_keys.get(key)
            if future is not None and future.done():  # a later batch may have re-registered the key
                del self._uncommitted_keys[key]

    async def _fetch_evicted_keys(self, requests: list[Any]) -> bool:
        """The hot cache may have dropped keys that Postgres still keeps: look this batch's misses
        up there (actors.restore.load_keys). False when Postgres could not answer: the batch must
        then not be applied, since a key memory does not know might be a replay."""
        try:
            asked, found = await load_keys(self.state.inventory.idempotency, requests, self.lookup)
        except LookupFailed as error:
            log.warning("shard %s: idempotency key lookup failed: %s", self.config.shard_id, error)
            self.metrics.idempotency_lookups.labels(self.metrics.shard, "failed").inc()
            return False
        if asked:
            self.metrics.idempotency_lookups.labels(self.metrics.shard, "found").inc(found)
            self.metrics.idempotency_lookups.labels(self.metrics.shard, "absent").inc(asked - found)
        return True

    async def _commit(self, changes: list[Any]) -> None:
        """Every commit, group commits and poison isolation's alike: then its seat changes are published."""
        epoch = self.state.epoch
        await self.store.commit(changes, epoch)
        self.seat_feed.committed(changes, epoch, time.time())

    def _on_commit(self, calls: int, commands: int, elapsed_s: float) -> None:
        self.last_commit_at = time.time()
        self.metrics.commits.inc()
        self.metrics.commit_seconds.observe(elapsed_s)
        self.metrics.commit_commands.observe(commands)
        self.metrics.commit_calls.observe(calls)

    # --- timers -----------------------------------------------------------------------------------------

    async def _expire_loop(self) -> None:
        tick_s = self.bounds.hold_expiry_tick_ms / 1000
        while True:
            await asyncio.sleep(tick_s)
            if not self._ready.is_set():
                continue
            inventory = self.state.inventory
            # The live-hold gauge is sampled here, once per tick: counting on every apply call cost
            # a copy of every live hold (1.35 ms at 120k holds, measured).
            self.metrics.active_holds.set(inventory.live_hold_count())
            outcomes = inventory.expire_due(time.time())
            if not outcomes:
                continue
            changes = [change for outcome in outcomes for change in outcome.changes]
            try:
                await self.committer.submit(changes, len(outcomes), (), outcomes)
            except CommitFailed:
                continue  # the actor rebuilds; the holds are still due and expire after it
            self.metrics.holds.labels(self.metrics.shard, "expired").inc(len(outcomes))

    async def _pricing_loop(self) -> None:
        """Every `pricing_interval_s`: move each dynamic section's price one bounded step toward its
        demand target (actors/inventory/pricing.py), through the ordinary command path and group
        commit, so a price a buyer sees is committed and audited. No dynamic section moving: no
        command, no commit."""
        bounds = self.bounds
        interval_s, step_max_percent = bounds.pricing_interval_s, bounds.pricing_step_max_percent
        rule = DemandRule(interval_s, bounds.pricing_velocity_horizon_s, bounds.pricing_last_call_s)
        taken_before: dict[UUID, list[int]] = {}
        while True:
            await asyncio.sleep(interval_s)
            if not self._ready.is_set():
                continue
            inventory = self.state.inventory
            taken_now = inventory.taken_by_section()
            if not taken_now:
                continue
            demands = await self._demands(list(taken_now))
            commands = inventory.price_commands(step_max_percent, demands=demands, rule=rule,
                                                taken_before=taken_before)
            taken_before = taken_now  # a restarted actor's first round sees no pace: no jump
            if not commands:
                continue
            now_s = time.time()
            outcomes = [inventory.apply(command, now_s) for command in commands]
            changes = [change for outcome in outcomes for change in outcome.changes]
            if not changes:  # proposed prices are within bounds by construction: never refused
                continue
            try:
                await self.committer.submit(changes, len(outcomes), (), outcomes)
            except CommitFailed:
                continue  # the actor rebuilds from Postgres: the last committed prices
            self.metrics.price_changes.inc(len(changes))

    async def _demands(self, event_ids: list[UUID]) -> dict[UUID, Demand]:
        """Each event's time to its start (from its document) and how many wait in its waiting
        room (Redis: line + waiting list; 0 when Redis does not answer — the price then follows
        the share and the pace alone until it does)."""
        now_s = time.time()
        waiting = await self._waiting(event_ids)
        demands = {}
        for event_id in event_ids:
            document = self.state.catalog.get(event_id)
            starts_at = document.get("starts_at") if document is not None else None
            seconds = None
            with contextlib.suppress(ValueError):  # no start known: no last call, the round goes on
                seconds = datetime.fromisoformat(str(starts_at).replace("Z", "+00:00")).timestamp() - now_s
            demands[event_id] = Demand(seconds, waiting.get(event_id, 0))
        return demands

    async def _waiting(self, event_ids: list[UUID]) -> dict[UUID, int]:
        if not self.config.redis_url:
            return {}
        try:
            if self._pricing_redis is None:
                import redis.asyncio as aioredis

                self._pricing_redis = aioredis.from_url(
                    self.config.redis_url, socket_timeout=self.bounds.redis_timeout_s,
                    socket_connect_timeout=self.bounds.redis_timeout_s)
            async with self._pricing_redis.pipeline(transaction=False) as pipe:
                for event_id in event_ids:
                    for key in waiting_keys(event_id):
                        pipe.zcard(key)
                counts = await pipe.execute()
        except Exception as error:  # Redis down or slow: priced without the waiting room this round
            log.debug("waiting-room depth for pricing: %s", error)
            return {}
        return {event_id: int(counts[2 * n]) + int(counts[2 * n + 1]) for n, event_id in enumerate(event_ids)}

    async def _purge_loop(self) -> None:
        """Every `idempotency_purge_interval_s`: delete keys older than their retention from
        Postgres in bounded batches, then let memory forget them. In that order: memory must never
        forget a key Postgres still holds (actors/inventory/idempotency.py)."""
        while True:
            if self._ready.is_set():
                try:
                    deleted, purged_before_s = await self.store.purge_keys(
                        time.time() - self.bounds.idempotency_retention_s)
                except PurgeInterrupted as stopped:
                    log.warning("shard %s: idempotency key purge interrupted: %s", self.config.shard_id,
                                stopped.__cause__)
                    deleted, purged_before_s = stopped.deleted, stopped.purged_before_s
                # Valid for whichever cache is current, a rebuilt one too: those keys are gone.
                self.state.inventory.idempotency.forget_before(purged_before_s)
                self.metrics.idempotency_keys_purged.inc(deleted)
            await asyncio.sleep(self.bounds.idempotency_purge_interval_s)

    # --- what Ray calls ------------------------------------------------------------------------------

    async def apply_wire(self, wire: bytes) -> bytes:
        """`apply` for the router: requests and replies in the compact encoding of actors.wire."""
        return encode_replies(await self.apply(decode_requests(wire)))

    def _event_layout(self, event_id: UUID) -> tuple[Any, str] | None:
        """The (layout, currency) the durable lookup renders views with (shards/lookup.py)."""
        event = self.state.inventory.events.get(event_id)
        return None if event is None else (event.layout, event.settings.currency)

    def _stock(self) -> list[tuple[UUID, Any]]:
        """Every event's sections (SectionAvailability), for the stock metrics at scrape time."""
        inventory = self.state.inventory
        return [(event_id, inventory.availability(event_id) or ()) for event_id in list(inventory.events)]

    def _layout_of(self, event_id: UUID) -> Any:
        """The event's layout, for the seat feed (None: the event is not in memory)."""
        event = self.state.inventory.events.get(event_id)
        return None if event is None else event.layout

    async def read(self, queries: list[Any]) -> list[Any]:
        await self._started()
        refused = self._not_owned(queries)
        return [refused[index] if index in refused else await answer_query(self.state, self.lookup, self.metrics, query)
                for index, query in enumerate(queries)]

    async def read_wire(self, wire: bytes) -> bytes:
        return encode_replies(await self.read(decode_requests(wire)))

    async def start(self) -> dict[str, Any]:
        """Recover (if not yet done) and report health once ready."""
        await self._started()
        return await self.health()

    async def health(self) -> dict[str, Any]:
        if self._start_task is None:  # a probe wakes a restarted actor up: recovery starts now
            self._start_task = asyncio.get_running_loop().create_task(self._start())
        state = self.state
        return {"shard_id": self.config.shard_id, "slots": len(self.owned), "pid": os.getpid(),
                "started_at": self.started_at, "epoch": state.epoch,
                "ready": self._ready.is_set(), "events": len(state.catalog),
                "quarantined_events": sorted(str(event_id) for event_id in state.quarantined),
                "last_commit_at": self.last_commit_at, "commit_queue_depth": self.committer.queue_depth,
                "core": CORE_STATUS.detail, "node_id": _node_id()}

    async def slots(self) -> list[int]:
        return sorted(self.owned)

    # --- slot moves (shards/slot_moves.py; cluster/slot_move.py drives them) ----------------------

    async def fence_slots(self, slots: list[int], version: int) -> dict[str, Any]:
        """A move's first step: stop serving `slots`. Calls wait while the shard pauses; everything
        applied before is committed (the committer drains), the slots are marked 'fenced' in
        Postgres, and memory is rebuilt without their events, so that neither a timer nor a late
        call can write for them here again. A rebuild after a crash reads the mark: the same."""
        await self._started()
        self._pause()
        try:
            await self.committer.drain()
            fenced = await self.store.fence_slots(sorted(slots), version)
            await self._recover_until_done()
        finally:
            self._resume()
        log.info("shard %s fenced %d slots for map version %d", self.config.shard_id, fenced, version)
        return await self.health()

    async def adopt_slots(self, slots: list[int]) -> dict[str, Any]:
        """A move's last step: serve `slots`, whose rows the move copied here and marked 'owned'
        (a rebuild loads them; nothing to do when this shard already serves them)."""
        await self._started()
        if not set(slots) <= self.owned:
            self._pause()
            try:
                await self._recover_until_done()
            finally:
                self._resume()
        return await self.health()

    async def metrics_text(self) -> bytes:
        return self.metrics.text()


def _node_id() -> str | None:
    """The Ray node this actor runs on (None outside Ray, as in the in-process tests)."""
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else None
    except Exception:
        return None


def _slot_of_request(request: Any) -> int | None:
    """The slot a command or query is about: its event's, or the one its hold, order or ticket id
    carries. None for requests about no one slot (a user's tickets across the shard)."""
    command = core_command(request)
    event_id = getattr(command, "event_id", None)
    if event_id is not None:
        return slot_of(event_id)
    for name in ("hold_id", "order_id", "ticket_id"):
        value = getattr(command, name, None)
        if value is not None:
            return slot_of_id(value)
    return None


def _spliced(count: int, answered: dict[int, Any], applied: list[Any]) -> list[Any]:
    """`count` replies in request order: the answered ones by index, the applied ones in turn."""
    rest = iter(applied)
    return [answered[index] if index in answered else next(rest) for index in range(count)]
