"""The single group-commit writer of a shard actor (DESIGN §5 step 3, STYLE §6).

Batches of changes arrive in the order the actor applied their commands. The writer takes
everything queued (up to `batch_commands_max` batches' worth, after lingering at most
`batch_wait_ms_max` for more), commits it as **one** fenced transaction, and only then resolves
the waiting futures, in order. A failed or unknown commit fails the batch *and everything queued
behind it* — those changes were computed on a memory state that assumed the failed ones — and
tells the actor to rebuild from Postgres (fail-stop). Nothing is ever acknowledged before COMMIT.

Except when the failure is a *deterministic data error* (`is_data_error`: Postgres refused a value
or a constraint, or the driver could not encode one): the same changes would fail again after any
number of retries, so failing every neighbour would let one bad command stall the shard. Then the
writer hands the failed and queued entries to `on_poison` instead of failing them; the actor finds
the offending command(s), rebuilds once, re-applies the others and resolves every entry's future
itself (`actors.isolation`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class CommitFailed(Exception):
    """The transaction carrying these changes did not (or may not have) committed."""


@dataclass(slots=True)
class Entry:
    """One `submit`: the changes of one apply call, and what poison isolation needs to redo it.

    Its future resolves to None once the changes are committed as they are, or — after poison
    isolation re-applied the call's requests — to the list of their new replies.
    """

    changes: Sequence[Any]
    commands: int
    future: asyncio.Future[Any]
    requests: Sequence[Any] = ()  # the call's requests, in apply order (empty for the expiry timer)
    outcomes: Sequence[Any] = ()  # their outcomes, aligned with `requests` (each has `.changes`)


CommitFunction = Callable[[list[Any]], Awaitable[None]]
PoisonHandler = Callable[[list[Entry], BaseException], Awaitable[None]]


def is_data_error(error: BaseException) -> bool:
    """A failure that the same changes would meet again: Postgres refused a value (SQLSTATE class
    22, data exception: NUL in text, numeric or datetime overflow) or a constraint (class 23:
    a CHECK, a unique key), or the driver could not encode a parameter. Connection losses,
    timeouts, fencing and `Diverged` (memory disagrees with the database: rebuilding fixes it)
    are not: their outcome is unknown or the cure is a rebuild, never blaming one command."""
    return unstorable_value(error) or (getattr(error, "sqlstate", None) or "").startswith("23")


def unstorable_value(error: BaseException) -> bool:
    """The data errors that are the request's own: a value Postgres refuses to store (SQLSTATE
    class 22) or the driver cannot encode (asyncpg.DataError, "invalid input for query argument";
    a str with a lone surrogate; an int or datetime out of the wire type's range)."""
    import asyncpg

    if isinstance(error, asyncpg.PostgresError):
        return (getattr(error, "sqlstate", None) or "").startswith("22")
    return isinstance(error, asyncpg.DataError | UnicodeError | OverflowError)


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
        on_poison: PoisonHandler | None = None,
    ) -> None:
        self._commit = commit
        self._queue: asyncio.Queue[Entry] = asyncio.Queue(maxsize=queue_batches_max)
        self.batch_commands_max = batch_commands_max
        self.batch_wait_s = batch_wait_ms_max / 1000
        self._on_failure = on_failure
        self._on_commit = on_commit
        self._on_poison = on_poison
        self._task: asyncio.Task[None] | None = None
        self.broken: BaseException | None = None

    @property
    def queue_depth(self) -> int:
        """Batches waiting for the writer (not counting the one being committed)."""
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail_queued(CommitFailed("the writer stopped"))

    def submit(self, changes: Sequence[Any], commands: int, requests: Sequence[Any] = (),
               outcomes: Sequence[Any] = ()) -> asyncio.Future[Any]:
        """Queue changes for commit. The future resolves after COMMIT (to None, or to re-applied
        replies after poison isolation: see `Entry`), or fails with CommitFailed.

        Called synchronously right after the commands were applied, so queue order is apply order.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.broken is not None:
            future.set_exception(CommitFailed(f"the writer is rebuilding after: {self.broken}"))
            return future
        # put_nowait: the actor's own concurrency bound keeps this queue from filling; if it ever
        # does, refusing is right, since waiting here would let another batch overtake this one.
        self._queue.put_nowait(Entry(changes, commands, future, requests, outcomes))
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

    async def _commit_entries(self, entries: list[Entry], commands: int) -> None:
        changes = [change for entry in entries for change in entry.changes]
        started = time.perf_counter()
        try:
            if changes:  # a drain barrier carries none
                await self._commit(changes)
        except asyncio.CancelledError:
            self._fail(entries, CommitFailed("the writer was cancelled mid-commit"))
            raise
        except Exception as error:
            self.broken = error
            if self._on_poison is not None and is_data_error(error):
                # Nothing was committed and nothing will be until the actor has isolated the
                # offender: it takes over every entry, in order, and resolves their futures.
                log.warning("group commit of %d commands refused a value (%s): isolating the offender",
                            commands, type(error).__name__)
                await self._on_poison([*entries, *self._take_queued()], error)
                return
            self._fail_all(entries, commands, error)
            return
        except BaseException as error:  # the outcome is unknown: fail everything, rebuild
            self.broken = error
            self._fail_all(entries, commands, error)
            return
        if self._on_commit is not None:
            self._on_commit(len(entries), commands, time.perf_counter() - started)
        for entry in entries:
            if not entry.future.done():
                entry.future.set_result(None)

    def _fail_all(self, entries: list[Entry], commands: int, error: BaseException) -> None:
        """The outcome is unknown: fail everything, queued entries too, and tell the actor to rebuild."""
        log.error("group commit of %d commands failed: %s: %s", commands, type(error).__name__, error)
        self._fail(entries, CommitFailed(str(error)))
        self._fail_queued(CommitFailed(f"an earlier commit failed: {error}"))
        self._on_failure(error)

    def _take_queued(self) -> list[Entry]:
        taken = []
        while not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return taken

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed (or failed): a barrier entry."""
        with contextlib.suppress(CommitFailed):
            await asyncio.shield(self.submit((), 0))

    def _fail(self, entries: list[Entry], error: Exception) -> None:
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
