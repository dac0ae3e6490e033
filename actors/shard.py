"""The `EventShard` Ray actor: the single owner of every event whose slot maps to its shard.

It wraps the pure inventory core with I/O (DESIGN §5): on start it takes the shard lease and
rebuilds memory from Postgres; ``apply`` applies a batch of commands synchronously (no await
between check and mutation) and answers only after the group committer has committed their
changes; ``read`` answers from memory; a timer expires holds through the same command path.

Failure handling is fail-stop. A failed or unknown commit fails every uncommitted reply with
`Unavailable` and the actor rebuilds from Postgres before serving again (taking a new epoch
first, which waits out any in-doubt transaction of the old one). A commit refused by the lease
(`Fenced`) means another actor owns the shard: this one stops for good. A broken invariant is a
bug: the process exits and Ray restarts it, and recovery rebuilds from Postgres.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from actors.committer import CommitFailed, Entry, GroupCommitter
from actors.ended_holds import answer_ended_holds
from actors.event_admin import create_event, update_event
from actors.inventory import NATIVE, NATIVE_STATUS, InvariantViolation, InventoryLimits, ShardInventory
from actors.inventory.changes import IdempotencyRecorded
from actors.inventory.commands import USER_COMMAND_TYPES
from actors.inventory.idempotency import IDEMPOTENCY_RETENTION_S_DEFAULT
from actors.inventory.results import Outcome
from actors.isolation import ApplyCrashed, PoisonIsolation
from actors.metrics import ShardMetrics
from actors.payments import checkout_outcome
from actors.protocol import (
    CompleteCheckout,
    CreateEvent,
    QueueGate,
    QueueRequired,
    RecordPayment,
    RefundPaidOrder,
    ShellOutcome,
    Unavailable,
    UpdateEvent,
    core_command,
)
from actors.reads import answer_query
from actors.recording import record_outcomes
from actors.restore import restore_shard
from actors.wire import decode_requests, encode_replies

if TYPE_CHECKING:
    from shards.lookup import DurableLookup

log = logging.getLogger(__name__)

# Commit batches queued behind the one in flight; bounded by the actor's max_concurrency anyway.
COMMIT_QUEUE_BATCHES_MAX = 1024
DB_POOL_SIZE_MIN = 2
START_ATTEMPTS_MAX = 30
START_RETRY_S = 1.0
# The actor allocates a few short-lived objects per command and keeps millions of long-lived ones
# (holds, the recovered state). Collecting the youngest generation every 700 allocations (the
# default) spent 6-9% of a hold in the collector (measured), and every full collection would walk
# the recovered heap, which `gc.freeze` moves out of the collector's sight after each recovery.
GC_YOUNG_THRESHOLD = 50_000


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """Everything a shard actor needs, passed at creation so Ray can restart it unaided."""

    shard_id: int
    slots: tuple[int, ...]
    dsn: str
    bounds: dict[str, Any] = field(default_factory=dict)
    # Test-only switches for negative controls (STYLE §10); production never sets them.
    fencing: bool = True
    idempotency: bool = True
    isolation: bool = True  # poison isolation (actors/isolation.py); off, a refused value fails its whole batch
    # Postgres answers what memory no longer keeps (shards/lookup.py): reads of ended holds, and
    # idempotency keys the cache dropped. Off, memory alone answers (the behaviour before issue 10).
    durable_lookup: bool = True


class EventShard:
    """Ray actor class (made remote by `cluster.raycluster`, so it stays importable without Ray)."""

    def __init__(self, config: ShardConfig) -> None:
        self.config = config
        self.bounds = config.bounds
        self.started_at = time.time()
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = ShardMetrics(config.shard_id)
        self.inventory = ShardInventory(self._limits())
        self.documents: dict[UUID, dict[str, Any]] = {}
        self.epoch = 0
        self.pool: Any = None
        self._writer: Any = None  # asyncpg.Connection of the group commit, see _writer_connection
        self.committer: GroupCommitter | None = None
        self.isolation: PoisonIsolation | None = None
        self.quarantined: dict[UUID, str] = {}  # events recovery refused (actors/restore.py)
        # How many rebuilds or isolations are under way: the shard serves again when the last ends.
        self._paused = 0
        self._uncommitted_keys: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._start_task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._timer: asyncio.Task[None] | None = None  # held so the expiry task is not collected
        self._purge_task: asyncio.Task[None] | None = None  # likewise, the idempotency key purge
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    def _limits(self) -> InventoryLimits:
        bounds = self.bounds
        return InventoryLimits(
            hold_items_max=max(bounds.get("hold_seats_max", 10), bounds.get("hold_quantity_max", 10)),
            # Only what the actor was given: the defaults live in InventoryLimits alone.
            **{name: bounds[name] for name in ("idempotency_keys_max", "closed_holds_max") if name in bounds},
        )

    # --- start, recovery, rebuild -----------------------------------------------------------------

    async def _started(self) -> None:
        if self._start_task is None:
            self._ready = asyncio.Event()
            self._start_task = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._start_task)
        assert self._ready is not None
        await self._ready.wait()

    async def _start(self) -> None:
        import asyncpg

        from shards.events import configure_json

        for attempt in range(START_ATTEMPTS_MAX):
            try:
                self.pool = await asyncpg.create_pool(
                    self.config.dsn, min_size=DB_POOL_SIZE_MIN, max_size=self.bounds.get("db_pool_size_max", 8),
                    init=configure_json, command_timeout=self.bounds.get("db_call_timeout_s", 3.0),
                    timeout=self.bounds.get("db_call_timeout_s", 3.0))
                await self._recover()
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                log.warning("shard %s start attempt %d failed: %r", self.config.shard_id, attempt + 1, error)
                if self.pool is not None:
                    self.pool.terminate()
                    self.pool = None
                await asyncio.sleep(START_RETRY_S)
        else:
            # Exit rather than live on unable to serve: Ray restarts the process and it tries anew.
            log.critical("shard %s could not recover after %d attempts: exiting", self.config.shard_id,
                         START_ATTEMPTS_MAX)
            os._exit(75)
        self.committer = GroupCommitter(
            self._commit, queue_batches_max=COMMIT_QUEUE_BATCHES_MAX,
            batch_commands_max=self.bounds.get("commit_batch_commands_max", 2048),
            # The fallbacks are the deployment's defaults (cluster.settings), so an actor started
            # without them (tests, benchmarks) groups its commits as production does. This one was
            # 0: once the writer's commit took fewer round trips, calls trickling in one by one
            # found a shorter commit to join, and 200 single-hold calls took ~60 transactions
            # instead of ~25 (measured, tests/integration/test_shard_actor.py).
            batch_wait_ms_max=self.bounds.get("commit_wait_ms_max", 2.0),
            on_failure=self._on_commit_failure, on_commit=self._on_commit,
            on_poison=self._isolate_poison if self.config.isolation else None)
        self.isolation = PoisonIsolation(self.config.shard_id, self.metrics, probe=self._probe,
                                         rebuild=self._recover_until_done, apply=self._apply_after_rebuild,
                                         commit=self._commit)
        self.committer.start()
        self._timer = asyncio.get_running_loop().create_task(self._expire_loop())
        self._purge_task = asyncio.get_running_loop().create_task(self._purge_loop())
        assert self._ready is not None
        self._ready.set()

    async def _recover(self) -> None:
        started = time.perf_counter()
        gc.unfreeze()  # the state being replaced must become collectable (holds and events form cycles)
        restored = await restore_shard(self.pool, self.config, self._limits(), self.holder,
                                       self.bounds.get("recovery_timeout_s", 120.0))
        self.inventory, self.documents = restored.inventory, restored.documents
        self.epoch, self.quarantined = restored.epoch, restored.quarantined
        self.metrics.events_quarantined.set(len(self.quarantined))
        gc.collect()
        gc.freeze()
        elapsed = time.perf_counter() - started
        self.metrics.recovery_seconds.set(elapsed)
        self.metrics.recoveries.inc()
        self.metrics.epoch.set(self.epoch)
        self.metrics.core_compiled.set(1 if NATIVE else 0)
        self.metrics.events.set(len(self.documents))
        self.metrics.active_holds.set(self.inventory.live_hold_count())
        log.info("shard %s recovered %d events at epoch %d in %.3f s", self.config.shard_id,
                 len(self.documents), self.epoch, elapsed)

    def _on_commit_failure(self, error: BaseException) -> None:
        from shards.writer import Fenced

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
        assert self._ready is not None
        self._paused += 1
        self._ready.clear()

    def _resume(self) -> None:
        assert self._ready is not None and self.committer is not None
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
                await asyncio.sleep(START_RETRY_S)

    # --- poison isolation (actors/isolation.py) ---------------------------------------------------

    async def _isolate_poison(self, entries: list[Entry], error: BaseException) -> None:
        """The committer's `on_poison`: a commit refused a value; isolate the command(s) behind it."""
        assert self.isolation is not None
        self._pause()
        try:
            await self.isolation.commit_refused(entries, error)
        finally:
            self._resume()

    async def _apply_crashed(self, requests: list[Any], crash: ApplyCrashed) -> list[Any]:
        assert self.isolation is not None and self.committer is not None
        self._pause()
        try:
            replies = await self.isolation.apply_crashed(requests, crash, self.committer.drain)
        except CommitFailed as error:
            return [Unavailable(str(error)) for _ in requests]
        finally:
            self._resume()
        return replies

    async def _probe(self, change_groups: list[tuple[Any, ...]]) -> list[BaseException | None]:
        """Which command's changes does Postgres refuse? (`shards.writer.probe_commands`)"""
        from shards.writer import connect_writer, probe_commands

        connection = await connect_writer(self.config.dsn, timeout_s=self.bounds.get("db_call_timeout_s", 3.0))
        try:
            return await probe_commands(connection, change_groups, _codec(), shard_id=self.config.shard_id,
                                        epoch=self.epoch if self.config.fencing else None)
        finally:
            connection.terminate()

    async def _apply_after_rebuild(self, requests: list[Any]) -> list[Outcome | ShellOutcome]:
        """Isolation's re-application: as `apply`, minus the readiness wait (the shard is paused
        for exactly this), keys first — the rebuilt cache may lack keys of these requests, and the
        rebuilt memory the ended holds they name (actors/ended_holds.py)."""
        if not await self._fetch_evicted_keys(requests):
            raise CommitFailed("the idempotency keys could not be read from Postgres")
        answered = await answer_ended_holds(self.inventory, self.durable_lookup(), requests)
        if not answered:
            return _apply_all(self, requests, time.time())
        passing = [index for index in range(len(requests)) if index not in answered]
        applied = iter(_apply_all(self, [requests[index] for index in passing], time.time()))
        return [ShellOutcome(answered[index]) if index in answered else next(applied) for index in range(len(requests))]

    # --- the command path ---------------------------------------------------------------------------

    async def apply(self, requests: list[Any]) -> list[Any]:
        while True:
            ready = self._ready
            if ready is None or not ready.is_set():
                await self._started()
            if not await self._fetch_evicted_keys(requests):
                return [Unavailable("the idempotency keys could not be read from Postgres") for _ in requests]
            answered = await answer_ended_holds(self.inventory, self.durable_lookup(), requests)
            assert self._ready is not None
            if self._ready.is_set():  # still: a rebuild may have begun while Postgres was asked
                break
        if self.quarantined:
            for index, request in enumerate(requests):
                if _event_of(request) in self.quarantined:
                    answered[index] = Unavailable("this event's stored rows are inconsistent: it is not served")
        if answered:
            return await self._apply_except(requests, answered)
        return await self._apply_ready(requests)

    async def _apply_except(self, requests: list[Any], answered: dict[int, Any]) -> list[Any]:
        """Apply the requests not answered already (quarantined events, ended holds), in order."""
        replies = [answered.get(index) for index in range(len(requests))]
        passing = [index for index in range(len(requests)) if index not in answered]
        if passing:
            for index, reply in zip(passing, await self._apply_ready([requests[i] for i in passing]), strict=True):
                replies[index] = reply
        return replies

    async def _apply_ready(self, requests: list[Any]) -> list[Any]:
        started = time.perf_counter()
        try:
            outcomes = _apply_all(self, requests, time.time())
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
            assert self.committer is not None
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
        from actors.restore import load_keys
        from shards.lookup import LookupFailed

        try:
            asked, found = await load_keys(self.inventory.idempotency, requests, self.durable_lookup())
        except LookupFailed as error:
            log.warning("shard %s: idempotency key lookup failed: %s", self.config.shard_id, error)
            self.metrics.idempotency_lookups.labels(self.metrics.shard, "failed").inc()
            return False
        if asked:
            self.metrics.idempotency_lookups.labels(self.metrics.shard, "found").inc(found)
            self.metrics.idempotency_lookups.labels(self.metrics.shard, "absent").inc(asked - found)
        return True

    async def _commit(self, changes: list[Any]) -> None:
        from shards.writer import plan_batch, write_batch

        plan = plan_batch(changes)
        connection = await self._writer_connection()
        try:
            await write_batch(connection, plan, _codec(), shard_id=self.config.shard_id,
                              epoch=self.epoch if self.config.fencing else None)
        except BaseException:
            # Whatever state the connection is in (mid-transaction, broken, in doubt) is not worth
            # reusing: terminating it rolls back what can be, the actor rebuilds, and its next
            # commit opens a fresh connection.
            self._writer = None
            connection.terminate()
            raise

    async def _writer_connection(self) -> Any:
        """The group commit's own connection (`shards.writer.connect_writer`), opened on first use.

        Not a pool connection: its timestamptz codec is the writer's (see `shards.writer`), and a
        dedicated connection also skips the reset query a pool sends on every release.
        """
        if self._writer is None or self._writer.is_closed():
            from shards.writer import connect_writer

            self._writer = await connect_writer(self.config.dsn, timeout_s=self.bounds.get("db_call_timeout_s", 3.0))
        return self._writer

    def _on_commit(self, calls: int, commands: int, elapsed_s: float) -> None:
        self.metrics.commits.inc()
        self.metrics.commit_seconds.observe(elapsed_s)
        self.metrics.commit_commands.observe(commands)
        self.metrics.commit_calls.observe(calls)

    async def _expire_loop(self) -> None:
        tick_s = self.bounds.get("hold_expiry_tick_ms", 200) / 1000
        while True:
            await asyncio.sleep(tick_s)
            assert self._ready is not None and self.committer is not None
            if not self._ready.is_set():
                continue
            # The live-hold gauge is sampled here, once per tick: counting on every apply call cost
            # a copy of every live hold (1.35 ms at 120k holds, measured).
            self.metrics.active_holds.set(self.inventory.live_hold_count())
            outcomes = self.inventory.expire_due(time.time())
            if not outcomes:
                continue
            changes = [change for outcome in outcomes for change in outcome.changes]
            try:
                await self.committer.submit(changes, len(outcomes))
            except CommitFailed:
                continue  # the actor rebuilds; the holds are still due and expire after it
            self.metrics.holds.labels(self.metrics.shard, "expired").inc(len(outcomes))

    async def _purge_loop(self) -> None:
        """Every `idempotency_purge_interval_s`: delete keys older than their retention from
        Postgres in bounded batches, then let memory forget them. In that order: memory must never
        forget a key Postgres still holds (actors/inventory/idempotency.py)."""
        from shards.lookup import (
            DURABLE_LOOKUP_TIMEOUT_S_DEFAULT,
            IDEMPOTENCY_PURGE_BATCH_KEYS_MAX_DEFAULT,
            IDEMPOTENCY_PURGE_INTERVAL_S_DEFAULT,
            PurgeInterrupted,
            purge_idempotency_keys,
        )

        bounds = self.bounds
        interval_s = bounds.get("idempotency_purge_interval_s", IDEMPOTENCY_PURGE_INTERVAL_S_DEFAULT)
        batch_keys_max = bounds.get("idempotency_purge_batch_keys_max", IDEMPOTENCY_PURGE_BATCH_KEYS_MAX_DEFAULT)
        retention_s = bounds.get("idempotency_retention_s", IDEMPOTENCY_RETENTION_S_DEFAULT)
        timeout_s = bounds.get("durable_lookup_timeout_s", DURABLE_LOOKUP_TIMEOUT_S_DEFAULT)
        while True:
            assert self._ready is not None
            if self._ready.is_set() and self.pool is not None:
                try:
                    deleted, purged_before_s = await purge_idempotency_keys(
                        self.pool, time.time() - retention_s, batch_keys_max, timeout_s)
                except PurgeInterrupted as stopped:
                    log.warning("shard %s: idempotency key purge interrupted: %s", self.config.shard_id,
                                stopped.__cause__)
                    deleted, purged_before_s = stopped.deleted, stopped.purged_before_s
                # Valid for whichever cache is current, a rebuilt one too: those keys are gone.
                self.inventory.idempotency.forget_before(purged_before_s)
                self.metrics.idempotency_keys_purged.inc(deleted)
            await asyncio.sleep(interval_s)

    async def apply_wire(self, wire: bytes) -> bytes:
        """`apply` for the router: requests and replies in the compact encoding of actors.wire."""
        return encode_replies(await self.apply(decode_requests(wire)))

    # --- reads ----------------------------------------------------------------------------------------

    def durable_lookup(self) -> DurableLookup | None:
        """Reads from Postgres for what memory no longer keeps (shards/lookup.py); None when the
        negative-control switch turned it off."""
        if not self.config.durable_lookup or self.pool is None:
            return None
        from shards.lookup import DURABLE_LOOKUP_TIMEOUT_S_DEFAULT, DurableLookup

        return DurableLookup(self.pool, self.bounds.get("durable_lookup_timeout_s", DURABLE_LOOKUP_TIMEOUT_S_DEFAULT),
                             self._event_layout)

    def _event_layout(self, event_id: UUID) -> tuple[Any, str] | None:
        event = self.inventory.events.get(event_id)
        return None if event is None else (event.layout, event.settings.currency)

    async def read(self, queries: list[Any]) -> list[Any]:
        await self._started()
        quarantined = self.quarantined
        return [Unavailable("this event's stored rows are inconsistent: it is not served")
                if quarantined and getattr(query, "event_id", None) in quarantined else await answer_query(self, query)
                for query in queries]

    async def read_wire(self, wire: bytes) -> bytes:
        return encode_replies(await self.read(decode_requests(wire)))

    async def start(self) -> dict[str, Any]:
        """Recover (if not yet done) and report health once ready."""
        await self._started()
        return await self.health()

    async def health(self) -> dict[str, Any]:
        if self._start_task is None:  # a probe wakes a restarted actor up: recovery starts now
            self._ready = asyncio.Event()
            self._start_task = asyncio.get_running_loop().create_task(self._start())
        return {"shard_id": self.config.shard_id, "slots": len(self.config.slots), "pid": os.getpid(),
                "started_at": self.started_at, "epoch": self.epoch,
                "ready": bool(self._ready and self._ready.is_set()), "events": len(self.documents),
                "quarantined_events": sorted(str(event_id) for event_id in self.quarantined),
                "core": NATIVE_STATUS}

    async def slots(self) -> list[int]:
        return list(self.config.slots)

    async def metrics_text(self) -> bytes:
        return self.metrics.text()


# Requests the shell handles itself (or unwraps) before the core; everything else is the core's.
_SHELL_REQUESTS = frozenset({CreateEvent, UpdateEvent, CompleteCheckout, RecordPayment, RefundPaidOrder, QueueGate})


def _apply_all(shard: EventShard, requests: list[Any], now_s: float) -> list[Outcome | ShellOutcome]:
    """Apply one call's commands in order, synchronously: no await between check and mutation.

    A module function, with the core's `apply` called straight from the loop: Ray wraps every
    method of an actor class (private ones too) in a tracing shim, a Python frame with ``*args``
    and ``**kwargs`` that cost ~0.2 µs per command when this loop called a method per command
    (py-spy showed the shim on every command's stack). A broken invariant exits the process
    whichever command broke it, so one ``try`` around the whole batch is enough. Any other
    exception leaves the commands before it applied without a commit and its own perhaps half
    applied: `ApplyCrashed` says which, and the actor isolates it (actors/isolation.py).
    """
    inventory = shard.inventory
    core_apply = inventory.apply if shard.config.idempotency else functools.partial(_apply_without_key, inventory)
    outcomes: list[Outcome | ShellOutcome] = []
    append = outcomes.append
    try:
        for request in requests:
            append(core_apply(request, now_s) if type(request) not in _SHELL_REQUESTS
                   else _apply_shell(shard, core_apply, request, now_s))
    except InvariantViolation:
        log.critical("invariant broken in shard %s: exiting so Ray restarts and recovery rebuilds",
                     shard.config.shard_id, exc_info=True)
        os._exit(70)
    except Exception as error:
        raise ApplyCrashed(len(outcomes), error) from error
    return outcomes


def _apply_shell(shard: EventShard, core_apply: Callable[[Any, float], Outcome], request: Any,
                 now_s: float) -> Outcome | ShellOutcome:
    kind = type(request)
    if kind is CreateEvent:
        return create_event(shard, request, now_s)
    if kind is UpdateEvent:
        return update_event(shard, request, now_s)
    if kind is QueueGate:
        command = request.command
        document = shard.documents.get(command.event_id)
        if document is not None and document["queue"].get("enabled") and not request.admitted:
            return ShellOutcome(QueueRequired(command.event_id))
        return core_apply(command, now_s)
    return checkout_outcome(shard, request, now_s)


def _event_of(request: Any) -> Any:
    return getattr(core_command(request), "event_id", None)


def _apply_without_key(inventory: ShardInventory, command: Any, now_s: float) -> Outcome:
    """The negative control's core (STYLE §10): user commands lose their idempotency key."""
    if isinstance(command, USER_COMMAND_TYPES):
        command = _without_key(command)
    return inventory.apply(command, now_s)


def _without_key(command: Any) -> Any:
    import dataclasses

    return dataclasses.replace(command, idempotency_key=None)


_CODEC: Any = None


def _codec() -> Any:
    global _CODEC
    if _CODEC is None:
        from actors.restore import result_codec

        _CODEC = result_codec()
    return _CODEC

