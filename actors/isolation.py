"""Poison isolation: one command that cannot be stored must not fail the commands batched with it.

A shard group-commits the changes of many callers in one transaction (`actors.committer`). If
Postgres refuses one of them — a value it cannot store, a constraint the change breaks — the whole
transaction fails, and fail-stop alone would answer 503 to every caller of the batch and rebuild;
a client repeating such a request would keep the shard's honest buyers failing. The router
validates what it can at the edge; this module is the mechanism behind that validation, for
whatever still gets through. Two triggers:

- **A commit refused a value** (`actors.committer.is_data_error`). The committer hands over the
  failed batch and everything queued behind it, nothing of which is committed or answered yet:
  1. *probe* — each command's changes are written in turn, each under its own savepoint, in one
     transaction that is always rolled back (`shards.writer.probe_commands`); a command whose
     own rows Postgres refuses with a data error is convicted;
  2. *rebuild* — memory holds the effects of every command of those entries: reload the shard
     from Postgres (taking a new epoch), once;
  3. *re-apply* — every other request of those entries, in their original order, on the rebuilt
     memory, committed in one transaction. Their callers have not been answered, so re-deciding
     their requests is invisible to them: they get the re-application's answers. The convicted
     get `Refused` (no effect; the reason is logged here, never sent).
- **Applying a call raised** (an exception other than a broken invariant, which exits the
  process). The commands before it in the call changed memory without a commit, and the one that
  raised may have changed half of something: wait until the commits already queued are done,
  rebuild, re-apply the call's other requests, and refuse the one that raised.

Bounds: one probe and one rebuild per isolation. If the probe convicts nobody (the failure only
shows in combination, or was not the data error it looked like) or the re-application fails
again, isolation gives up the way fail-stop does: every entry fails with `CommitFailed` (503,
nothing acknowledged) and the shard rebuilds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from actors.committer import CommitFailed, Entry, is_data_error, unstorable_value
from actors.protocol import Refused, core_command
from actors.shard_metrics import ShardMetrics
from shards.writer import oversell_guard

log = logging.getLogger(__name__)

Probe = Callable[[list[tuple[Any, ...]]], Awaitable[list[BaseException | None]]]
# Apply requests to the rebuilt memory (their idempotency keys looked up first) → their outcomes.
Apply = Callable[[list[Any]], Awaitable[list[Any]]]
Commit = Callable[[list[Any]], Awaitable[None]]


class ApplyCrashed(Exception):
    """Applying a call's requests raised at `index`: memory may hold a half-applied command."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(f"request {index} raised {type(error).__name__}: {error}")
        self.index = index
        self.error = error


def refusal(error: BaseException) -> Refused:
    """The reply of a convicted command: 422 for a value Postgres cannot store, 500 otherwise."""
    if unstorable_value(error):
        return Refused("VALIDATION_ERROR", "the request holds a value that cannot be stored")
    return Refused("INTERNAL_ERROR", "the shard could not store this request")


def describe(request: Any) -> str:
    """A log line's view of a request: its type, user and key, never its (possibly huge) payload."""
    command = core_command(request)
    return (f"{type(command).__name__}(user={getattr(command, 'user_id', None)!r}, "
            f"key={getattr(command, 'idempotency_key', None)!r})")


class PoisonIsolation:
    """The actor's isolation procedure, given what it needs from the actor (STYLE §2)."""

    def __init__(self, shard_id: int, metrics: ShardMetrics, *, probe: Probe, rebuild: Callable[[], Awaitable[None]],
                 apply: Apply, commit: Commit) -> None:
        self.shard_id = shard_id
        self.metrics = metrics
        self._probe = probe
        self._rebuild = rebuild
        self._apply = apply
        self._commit = commit

    async def commit_refused(self, entries: list[Entry], error: BaseException) -> None:
        """Trigger 1 (see the module docstring). Resolves every entry's future, whatever happens."""
        self.metrics.isolations.labels(self.metrics.shard, "commit_refused").inc()
        guard = oversell_guard(error)
        if guard is not None:
            self.metrics.oversell_refused.labels(self.metrics.shard, guard).inc()
            log.error("shard %s: %s refused a commit: memory sold what the database says is taken "
                      "(a second writer, or memory that drifted from the rows)", self.shard_id, guard)
        try:
            groups = [tuple(outcome.changes) for entry in entries for outcome in entry.outcomes]
            failures = await self._probe(groups)
        except Exception as probe_error:
            log.error("shard %s: probing a refused batch failed (%s); failing it", self.shard_id, probe_error)
            await self._give_up(entries, error)
            return
        convicted = self._convicted(entries, failures)
        if not convicted:
            log.error("shard %s: a batch was refused (%s: %s) but no single command is; failing it", self.shard_id,
                      type(error).__name__, error)
            await self._give_up(entries, error)
            return
        await self._rebuild()
        await self._reapply(entries, convicted)

    def _convicted(self, entries: list[Entry], failures: list[BaseException | None]) -> dict[tuple[int, int], Refused]:
        convicted: dict[tuple[int, int], Refused] = {}
        position = 0
        for entry_index, entry in enumerate(entries):
            for request_index in range(len(entry.outcomes)):
                failure = failures[position]
                position += 1
                if failure is None or not is_data_error(failure):
                    continue
                if request_index >= len(entry.requests):  # the expiry timer's: nobody to refuse
                    log.error("shard %s: an expiry's rows were refused: %r", self.shard_id, failure)
                    continue
                request = entry.requests[request_index]
                log.warning("shard %s: isolated %s: %s: %s", self.shard_id, describe(request),
                            type(failure).__name__, failure)
                convicted[(entry_index, request_index)] = refusal(failure)
        return convicted

    async def apply_crashed(self, requests: Sequence[Any], crash: ApplyCrashed,
                            drain: Callable[[], Awaitable[None]]) -> list[Any]:
        """Trigger 2: the replies of a call whose request `crash.index` raised while applied."""
        self.metrics.isolations.labels(self.metrics.shard, "apply_raised").inc()
        log.error("shard %s: applying %s raised: refusing it and rebuilding", self.shard_id,
                  describe(requests[crash.index]), exc_info=crash.error)
        await drain()  # the commits queued before this call were computed on sound memory
        await self._rebuild()
        loop = asyncio.get_running_loop()
        entry = Entry((), 0, loop.create_future(), requests, [None] * len(requests))
        refused = Refused("INTERNAL_ERROR", "the shard could not apply this request")
        await self._reapply([entry], {(0, crash.index): refused})
        replies: list[Any] = await entry.future  # resolved by _reapply, with replies or CommitFailed
        return replies

    async def _reapply(self, entries: list[Entry], convicted: dict[tuple[int, int], Refused]) -> None:
        """Re-apply every request not convicted, commit them in one transaction, answer all."""
        kept = [(entry_index, request_index, request)
                for entry_index, entry in enumerate(entries)
                for request_index, request in enumerate(entry.requests)
                if (entry_index, request_index) not in convicted]
        try:
            outcomes = await self._apply([request for _, _, request in kept]) if kept else []
            changes = [change for outcome in outcomes for change in outcome.changes]
            if changes:
                await self._commit(changes)
        except Exception as error:
            log.error("shard %s: re-applying an isolated batch failed (%s: %s); failing it", self.shard_id,
                      type(error).__name__, error)
            await self._give_up(entries, error)
            return
        replies: list[list[Any]] = [[None] * len(entry.requests) for entry in entries]
        for (entry_index, request_index), refused in convicted.items():
            replies[entry_index][request_index] = refused
        for (entry_index, request_index, _), outcome in zip(kept, outcomes, strict=True):
            replies[entry_index][request_index] = outcome.result
        self.metrics.isolated_commands.labels(self.metrics.shard).inc(len(convicted))
        for entry, entry_replies in zip(entries, replies, strict=True):
            if entry.requests:
                _resolve(entry.future, entry_replies)
            else:  # the expiry timer's: it expires again once the shard serves
                _fail(entry.future, CommitFailed("expiry re-runs after poison isolation"))

    async def _give_up(self, entries: list[Entry], error: BaseException) -> None:
        for entry in entries:
            _fail(entry.future, CommitFailed(str(error)))
        await self._rebuild()


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
