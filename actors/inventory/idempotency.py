"""The hot cache of idempotency keys: (user_id, key) → the first result of that request.

Postgres (``idempotency_keys``) is the long-term store and keeps every key ≥ 24 h, as the API
promises. The core only keeps the most recent ``idempotency_keys_max`` keys, none older than
``idempotency_retention_s``: enough to answer the retries of a burst (clients retry within
seconds) without letting a 500k-user on-sale grow memory without bound. Recovery reloads the
recent keys with :meth:`IdempotencyCache.load`. A key that fell out of the cache is the shell's
to look up in Postgres; the cache reports misses, it cannot tell "never seen" from "evicted".

What is recorded: the result of every keyed command that reached a decision, success or 4xx,
because the API promises "the first response again". EVENT_NOT_FOUND is not recorded: during a
rebalance the event may simply live on another shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
    """A digest of the request without the ids the caller generated (a retry brings new ones)
    and without the key itself."""
    skipped = {"idempotency_key", *command.generated_ids}
    body = tuple(
        (field.name, getattr(command, field.name)) for field in dataclasses.fields(command) if field.name not in skipped
    )
    return hashlib.blake2b(repr((type(command).__name__, body)).encode(), digest_size=16).digest()


class IdempotencyCache:
    """FIFO of recorded keys, bounded in count and in age (entries arrive in time order)."""

    __slots__ = ("_entries", "keys_max", "retention_s")

    def __init__(self, keys_max: int, retention_s: float) -> None:
        if keys_max <= 0 or retention_s <= 0:
            raise ValueError("idempotency bounds must be positive")
        self.keys_max = keys_max
        self.retention_s = retention_s
        self._entries: OrderedDict[tuple[str, str], Recorded] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, user_id: str, key: str, now_s: float) -> Recorded | None:
        entry = self._entries.get((user_id, key))
        if entry is None or now_s - entry.recorded_at_s > self.retention_s:
            return None
        return entry

    def record(self, user_id: str, key: str, entry: Recorded, now_s: float) -> None:
        self._entries[(user_id, key)] = entry
        self._entries.move_to_end((user_id, key))
        self._evict(now_s)

    def load(self, records: Iterable[IdempotencyRecorded], now_s: float) -> None:
        """Recovery: reload recorded keys (oldest first) from the database."""
        for record in sorted(records, key=lambda r: r.at_s):
            self._entries[(record.user_id, record.key)] = Recorded(record.fingerprint, record.result, record.at_s)
        self._evict(now_s)

    def _evict(self, now_s: float) -> None:
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if len(entries) <= self.keys_max and now_s - oldest.recorded_at_s <= self.retention_s:
                break
            entries.popitem(last=False)
