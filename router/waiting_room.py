"""The waiting room (API.md "Waiting room", DESIGN §7): a fair line in Redis in front of a
queue-mode event, and the admission tokens that let its buyers hold.

`POST /v1/events/{id}/queue` joins (joining again keeps the place), `GET` polls; both are hot
routes (router/edge.py) and both are one call of `lua/waiting_room.lua`, which first runs the
event's admitter and then answers for the caller. The admitter is not a process: the event's
admission bucket lives in Redis and every step refills and spends it, so whichever worker of
whichever router calls, admission runs at the event's `admit_per_second` (at most
`queue_burst_s` of it at once after a quiet spell), in ticket order. A waiting user who has not
joined or polled for `queue_idle_s` is dropped when the line reaches them, without using an
admission, so people who left do not stall the line; they read `"status": "expired"` and may join
again at the back. An admitted user gets a token (router/queue_tokens.py: HMAC, bound to user and
event) that expires `token_seconds` after the admission, the same token on every poll, and sends
it as `X-Queue-Token` with `POST /v1/holds`, which the core refuses on a queue-mode event without
one (403 `QUEUE_TOKEN_REQUIRED`).

Users are stored by a digest of their id (fixed length, whatever the token's subject). The event's
queue settings come from its document (a shard read), cached per worker for
`queue_settings_cache_s`: enabling or disabling queue mode reaches every worker within that.
Redis not answering is 503 with Retry-After: without the line nobody can be admitted fairly.

Stock-aware: the admitter never has more admissions outstanding (admitted, not yet used for a
hold: `holds_api` marks them used) than `queue_admit_stock_factor` × the event's available
tickets, from the worker's availability snapshot (router/snapshots.py, `read_snapshot_s`; an admission used less
than that long ago still counts, since the cached stock may not show its hold yet); with nothing available
and nothing held the event is sold out, and every waiting user reads `"status": "sold_out"` (keeping
the place: released or expired holds make tickets available again, and admission resumes in order).

Fair start: who joins before the sale opens (the earliest public sale window) waits unplaced
(`"position": null`); the first step after the opening places them in a random order — a seeded
Fisher-Yates in the script, its seed kept in Redis and logged, `opening_order` recomputes it —
ahead of everyone who joins later, FIFO.

Not built yet (issue 13): the waiting list after sell-out.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prometheus_client import Counter, Histogram
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from cluster.settings import Settings
from router.problems import ApiError

LUA = Path(__file__).resolve().parent.parent / "lua"
log = logging.getLogger(__name__)

SCRIPT = (LUA / "waiting_room.lua").read_text()
SPEND_SCRIPT = (LUA / "waiting_room_spend.lua").read_text()
KEY_PREFIX = "ticketing:queue"

STEPS = Counter("ticketing_queue_steps_total", "Waiting-room joins and polls by answer.", ["kind", "status"])
ADMITTED = Counter("ticketing_queue_admitted_total", "Users the waiting room admitted.")
LINE_LENGTH = Histogram("ticketing_queue_line_length", "Users waiting in the line, as each join or poll saw it.",
                        buckets=(10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000))
DROPPED = Counter("ticketing_queue_dropped_total", "Waiting users dropped for not polling.")
SHUFFLED = Counter("ticketing_queue_shuffled_total", "Early joiners placed in random order at a sale's opening.")
SPENT = Counter("ticketing_queue_admissions_used_total",
                "Holds made with a waiting-room admission, by whether it was marked used.", ["result"])


@dataclass(frozen=True, slots=True)
class QueueStep:
    status: str  # waiting | early (joined before the opening: no position yet) | admitted | expired | full
    position: int | None = None
    admitted_at_s: float | None = None
    line_length: int = 0


def user_digest(user_id: str) -> str:
    return hashlib.blake2b(user_id.encode(), digest_size=16).hexdigest()


PARK_MILLER_MODULUS = 2_147_483_647  # the shuffle's generator: x -> 48271 x mod (2^31 - 1)


def opening_order(digests: list[str], seed: int) -> list[str]:
    """The line order `lua/waiting_room.lua` gives those who joined before the opening, from the
    seed it keeps (and the router logs): Fisher-Yates over the sorted digests."""
    members = sorted(digests)
    state = seed
    for i in range(len(members), 1, -1):
        state = state * 48271 % PARK_MILLER_MODULUS
        j = state % i
        members[i - 1], members[j] = members[j], members[i - 1]
    return members


class WaitingRoom:
    def __init__(self, runtime: Any, settings: Settings) -> None:
        self.runtime = runtime  # its Redis client is made at start-up, after this object
        self.settings = settings
        self._scripts: dict[str, AsyncScript] = {}

    def _script(self, source: str) -> AsyncScript:
        redis = self.runtime.redis
        if redis is None:
            raise _unavailable("the waiting room has no Redis configured", self.settings.retry_after_s)
        script = self._scripts.get(source)
        if script is None or script.registered_client is not redis:
            script = self._scripts[source] = redis.register_script(source)
        return script

    async def step(self, event_id: UUID, user_id: str, *, join: bool, admit_per_second: int,
                   token_seconds: int, cap: int, opens_at_s: float) -> QueueStep:
        """Run the event's admitter (at most `cap` admissions outstanding, -1: no limit; the line
        opens, shuffling who joined early, at `opens_at_s`), then join or poll for `user_id`."""
        script = self._script(SCRIPT)
        retry_after_s = self.settings.retry_after_s
        settings = self.settings
        keys = _keys(event_id)
        arguments: list[str | int] = [int(time.time() * 1000), user_digest(user_id), 1 if join else 0, admit_per_second,
                     max(1, math.floor(admit_per_second * settings.queue_burst_s)), int(settings.queue_idle_s * 1000),
                     token_seconds * 1000, settings.queue_scan_max, settings.queue_waiting_max,
                     int(settings.queue_key_ttl_s * 1000), cap, int(settings.read_snapshot_s * 1000) + 100,
                     int(opens_at_s * 1000), secrets.randbelow(PARK_MILLER_MODULUS - 1) + 1]
        try:
            status, value, admitted_now, dropped_now, line_length, shuffled_now = await script(keys, arguments)
        except (RedisError, OSError, TimeoutError) as error:
            raise _unavailable(f"waiting room: {type(error).__name__}: {error}", retry_after_s) from None
        status = status.decode() if isinstance(status, bytes) else str(status)
        STEPS.labels("join" if join else "poll", status).inc()
        LINE_LENGTH.observe(int(line_length))
        if admitted_now:
            ADMITTED.inc(int(admitted_now))
        if dropped_now:
            DROPPED.inc(int(dropped_now))
        if shuffled_now:
            seed = await self.runtime.redis.hget(keys[4], "shuffle_seed")
            SHUFFLED.inc(int(shuffled_now))
            log.info("waiting room of %s opened: %d early joiners shuffled with seed %s", event_id,
                     int(shuffled_now), seed.decode() if isinstance(seed, bytes) else seed)
        if status == "admitted":
            return QueueStep(status, admitted_at_s=int(value) / 1000, line_length=int(line_length))
        if status == "waiting":
            return QueueStep(status, position=int(value), line_length=int(line_length))
        return QueueStep(status, line_length=int(line_length))


    async def spend(self, event_id: UUID, user_id: str) -> None:
        """`user_id` held with its admission: it no longer counts against the stock. Best effort:
        a failure only leaves the admission counted until it expires, so it is logged, not raised."""
        try:
            keys = _keys(event_id)
            marked = await self._script(SPEND_SCRIPT)([keys[2], keys[5]],
                                                      [user_digest(user_id), int(time.time() * 1000)])
        except (ApiError, RedisError, OSError, TimeoutError) as error:
            SPENT.labels("failed").inc()
            log.warning("waiting room: could not mark %s's admission used: %s", event_id, error)
            return
        SPENT.labels("marked" if marked else "already").inc()


def _keys(event_id: UUID) -> list[str]:
    tag = f"{KEY_PREFIX}:{{{event_id}}}"
    return [f"{tag}:line", f"{tag}:seen", f"{tag}:admitted", f"{tag}:expired", f"{tag}:meta", f"{tag}:spent",
            f"{tag}:early"]


def _unavailable(reason: str, retry_after_s: int) -> ApiError:
    return ApiError(503, "SHARD_UNAVAILABLE", "the waiting room is not answering; retry later",
                    headers={"Retry-After": str(retry_after_s)}, reason=reason)
