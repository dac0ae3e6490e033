"""The hot cache of idempotency keys: (user_id, key) → the first result of that request.

Postgres (``idempotency_keys``) is the store of record: a key lives there from its commit until
the shard actor's purge job deletes it, at least ``idempotency_retention_s`` later (≥ 24 h, as
the API promises). This cache holds the most recent ``idempotency_keys_max`` of those keys, so the
retries of a burst are answered without a round trip. It never ages entries out on its own: a key
is forgotten only after Postgres dropped it (:meth:`IdempotencyCache.forget_before`, called by the
purge job) or when the count bound pushes it out. Otherwise memory would forget a key that
Postgres still holds, a reuse would re-execute the command, and its insert would hit the table's
primary key and fail the whole group commit (issue 10, defect 3).

So a miss means one of two things: the key was never recorded, or the count bound dropped it and
it may still be in Postgres. :attr:`IdempotencyCache.complete` says which case is possible: it is
True while every key the cache ever dropped is older than what the purge job has already deleted
in Postgres (``dropped_newest_s < purged_before_s``); then a miss is final. When it is False the
shell looks the batch's missing keys up in Postgres and :meth:`load`\\ s them before applying
(`actors.restore.load_keys`). Dropped by count is an undersized cache under heavy load: the lookup
then costs one query per apply call until the purge job has passed the newest dropped key.

What is recorded: the result of every keyed command that reached a decision, success or 4xx,
because the API promises "the first response again". EVENT_NOT_FOUND is not recorded: during a
rebalance the event may simply live on another shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

from actors.inventory.changes import IdempotencyRecorded
from actors.inventory.commands import UserCommand
from actors.inventory.results import Result


class Recorded(NamedTuple):
    fingerprint: bytes
    result: Result
    recorded_at_s: float


def fingerprint(command: UserCommand) -> bytes:
    """A digest of the request without the ids the caller generated (a retry brings new ones),
    without the key itself, and without the waiting room's verdict (a retry may bring a fresh
    admission token: the request is the same)."""
    skipped = {"idempotency_key", "queue_admitted", *command.generated_ids}
    body = tuple(
        (field.name, getattr(command, field.name)) for field in dataclasses.fields(command) if field.name not in skipped
    )
    return hashlib.blake2b(repr((type(command).__name__, body)).encode(), digest_size=16).digest()


class IdempotencyCache:
    """FIFO of recorded keys bounded in count; forgets by age only what Postgres has purged."""

    __slots__ = ("_entries", "dropped_newest_s", "keys_max", "purged_before_s")

    def __init__(self, keys_max: int) -> None:
        if keys_max <= 0:
            raise ValueError("idempotency_keys_max must be positive")
        self.keys_max = keys_max
        self._entries: OrderedDict[tuple[str, str], Recorded] = OrderedDict()
        # Memory may lack keys recorded at or before `dropped_newest_s`; Postgres holds none recorded
        # before `purged_before_s`. A fresh cache of an empty shard lacks nothing.
        self.dropped_newest_s = -math.inf
        self.purged_before_s = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def complete(self) -> bool:
        """True when a miss is final: every key memory dropped is gone from Postgres too."""
        return self.dropped_newest_s < self.purged_before_s

    def lookup(self, user_id: str, key: str) -> Recorded | None:
        return self._entries.get((user_id, key))

    def record(self, user_id: str, key: str, entry: Recorded) -> None:
        self._entries[(user_id, key)] = entry
        self._entries.move_to_end((user_id, key))
        self._evict()

    def load(self, records: Iterable[IdempotencyRecorded]) -> None:
        """Add keys read from Postgres (recovery, or the shell's lookup of missing keys). A key
        memory already has keeps its entry: memory is never behind Postgres for a key it holds."""
        entries = self._entries
        for record in sorted(records, key=lambda r: r.at_s):
            if (record.user_id, record.key) not in entries:
                entries[(record.user_id, record.key)] = Recorded(record.fingerprint, record.result, record.at_s)
        self._evict()

    def protect(self, keys: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Before a batch: move its keys that memory has to the young end of the FIFO, so the keys
        the batch records cannot push them out before their command is applied; returns the keys
        memory does not have. (Safe while ``keys_max`` ≥ 2 × the batch size, checked in settings.)"""
        entries = self._entries
        missing = []
        for user_key in keys:
            if user_key in entries:
                entries.move_to_end(user_key)
            else:
                missing.append(user_key)
        return missing

    def mark_dropped(self, recorded_at_s: float) -> None:
        """Memory may lack keys recorded up to `recorded_at_s` (recovery loaded only the newest)."""
        self.dropped_newest_s = max(self.dropped_newest_s, recorded_at_s)

    def forget_before(self, purged_before_s: float) -> int:
        """Postgres holds no key recorded before `purged_before_s` any more: forget those too.

        Entries are in arrival order, so this pops from the old end and stops at the first younger
        entry; an older key that arrived late (loaded by the shell's lookup, or moved by
        :meth:`protect`) stays until the count bound drops it, which is harmless: it is answered as
        a replay, and dropping it cannot make the cache incomplete. Returns how many it forgot.
        """
        self.purged_before_s = max(self.purged_before_s, purged_before_s)
        entries = self._entries
        forgotten = 0
        while entries and next(iter(entries.values())).recorded_at_s < purged_before_s:
            entries.popitem(last=False)
            forgotten += 1
        return forgotten

    def _evict(self) -> None:
        entries = self._entries
        while len(entries) > self.keys_max:
            _, dropped = entries.popitem(last=False)
            if dropped.recorded_at_s > self.dropped_newest_s:
                self.dropped_newest_s = dropped.recorded_at_s
