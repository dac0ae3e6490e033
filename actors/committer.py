"""The single group-commit writer of a shard actor (DESIGN §5 step 3, STYLE §6).

Batches of changes arrive in the order the actor applied their commands. The writer takes
everything queued (up to `batch_commands_max` batches' worth, after lingering at most
`batch_wait_ms_max` for more), commits it as **one** fenced transaction, and only then resolves
the waiting futures, in order. A failed or unknown commit fails the batch *and everything queued
behind it* — those changes were computed on a memory state that assumed the failed ones — and
tells the actor to rebuild from Postgres (fail-stop). Nothing is ever acknowledged before COMMIT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class CommitFailed(Exception):
    """The transaction carrying these changes did not (or may not have) committed."""


@dataclass(slots=True)
class _Entry:
    changes: Sequence[Any]
    commands: int
    future: asyncio.Future[None]


CommitFunction = Callable[[list[Any]], Awaitable[None]]


class GroupCommitter:
    def __init__(
        self,
        commit: CommitFunction,
        *,
        queue_batches_max: int,
        batch_commands_max: int,
        batch_wait_ms_max: float,
        on_failure: Callable[[BaseException], None],
        on_commit: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self._commit = commit
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue(maxsize=queue_batches_max)
        self.batch_commands_max = batch_commands_max
        self.batch_wait_s = batch_wait_ms_max / 1000
        self._on_failure = on_failure
        self._on_commit = on_commit
        self._task: asyncio.Task[None] | None = None
        self.broken: BaseException | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail_queued(CommitFailed("the writer stopped"))

    def submit(self, changes: Sequence[Any], commands: int) -> asyncio.Future[None]:
        """Queue changes for commit. The future resolves after COMMIT, or fails with CommitFailed.

        Called synchronously right after the commands were applied, so queue order is apply order.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.broken is not None:
            future.set_exception(CommitFailed(f"the writer is rebuilding after: {self.broken}"))
            return future
        # put_nowait: the actor's own concurrency bound keeps this queue from filling; if it ever
        # does, refusing is right, since waiting here would let another batch overtake this one.
        self._queue.put_nowait(_Entry(changes, commands, future))
        return future

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            entries = [first]
            commands = first.commands
            if self.batch_wait_s > 0 and self._queue.empty():
                await asyncio.sleep(self.batch_wait_s)
            while not self._queue.empty() and commands < self.batch_commands_max:
                entry = self._queue.get_nowait()
                entries.append(entry)
                commands += entry.commands
            await self._commit_entries(entries, commands)

    async def _commit_entries(self, entries: list[_Entry], commands: int) -> None:
        changes = [change for entry in entries for change in entry.changes]
        started = time.perf_counter()
        try:
            await self._commit(changes)
        except asyncio.CancelledError:
            self._fail(entries, CommitFailed("the writer was cancelled mid-commit"))
            raise
        except BaseException as error:  # the outcome is unknown: fail everything, rebuild
            self.broken = error
            log.error("group commit of %d commands failed: %s: %s", commands, type(error).__name__, error)
            self._fail(entries, CommitFailed(str(error)))
            self._fail_queued(CommitFailed(f"an earlier commit failed: {error}"))
            self._on_failure(error)
            return
        if self._on_commit is not None:
            self._on_commit(len(entries), commands, time.perf_counter() - started)
        for entry in entries:
            if not entry.future.done():
                entry.future.set_result(None)

    def _fail(self, entries: list[_Entry], error: Exception) -> None:
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(error)

    def _fail_queued(self, error: Exception) -> None:
        while not self._queue.empty():
            entry = self._queue.get_nowait()
            if not entry.future.done():
                entry.future.set_exception(error)

    def reset(self) -> None:
        """After the actor rebuilt its memory from Postgres, accept changes again."""
        self.broken = None
